"""A procedural object grammar: coloured primitives composed into objects with captions.

Every object of the world is a union of solid primitives (:class:`Primitive`) built by one of the
builder functions in :data:`KINDS` from a random generator and a main colour. The builders work in
"natural" coordinates (ground at z = 0, +Z up, **front facing +X = azimuth 0**, +Y is the viewer's right
when looking at the front); :func:`make_object` then moves the object so its bounding box is centred on
the origin and scales it so its bounding sphere (about the origin) has radius :data:`TARGET_RADIUS`,
which keeps every object well inside the camera sampler's frame (orbit radius 2-2.5, fovy 40-50 deg).

Variation is seeded and reproducible: the builder draws proportions and optional parts from
``random.Random(seed)`` (pure Python, so the same seed gives the same object on any platform and with
any torch version). :func:`parse_prompt` derives the seed from the caption (a hash), so one prompt
always means one object.

Front and back. The kinds in :data:`FRONT_BACK_KINDS` carry features that make front (+X) and back (-X)
views clearly different at 64x64: a logo on the mug's front, a cushion and open seat in front of the
chair's backrest, the house's door and windows (+ a chimney on the back slope), the snowman's carrot nose
eyes and buttons, the car's headlights, grille and windscreen vs its tail lights and number plate, the lamp's lit shade
facing forward, the penguin's white belly and beak, the teapot's spout and painted flower (front) vs handle (back), the
robot's face and chest panel vs its backpack. The other kinds are (statistically) rotationally or
mirror symmetric front-to-back.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..cameras import DIRECTIONS
from ..errors import PromptError, short

RGB = Tuple[float, float, float]
Vec3 = Tuple[float, float, float]

#: primitive kinds the ray caster knows (see :class:`Primitive` for the meaning of ``size``).
PRIMITIVE_KINDS = ("box", "sphere", "cylinder", "cone", "torus", "capsule")

#: objects are scaled so that their bounding sphere about the origin has this radius (world units).
TARGET_RADIUS = 0.55

#: named colours of the world (linear-ish RGB in [0, 1]); the first word of a caption.
COLOURS: Dict[str, RGB] = {
    "red": (0.85, 0.12, 0.10),
    "orange": (0.95, 0.50, 0.08),
    "yellow": (0.95, 0.85, 0.15),
    "green": (0.15, 0.62, 0.20),
    "blue": (0.15, 0.30, 0.85),
    "purple": (0.55, 0.20, 0.70),
    "pink": (0.95, 0.50, 0.70),
    "brown": (0.50, 0.30, 0.14),
    "grey": (0.50, 0.50, 0.52),
    "black": (0.10, 0.10, 0.10),
    "white": (0.93, 0.93, 0.93),
}
#: spellings accepted by :func:`parse_prompt` for a colour of :data:`COLOURS`.
COLOUR_ALIASES = {"gray": "grey", "violet": "purple"}
#: colours drawn when none is given (white is left out: the views are composited over white).
DEFAULT_PALETTE = tuple(c for c in COLOURS if c != "white")

# Fixed part colours.
_DARK = (0.08, 0.08, 0.09)
_LIGHT = (0.96, 0.96, 0.96)
_SNOW = (0.94, 0.95, 0.97)
_CARROT = (0.98, 0.45, 0.05)
_WOOD = (0.45, 0.28, 0.12)
_GLASS = (0.25, 0.45, 0.65)
_BULB = (1.00, 0.92, 0.45)
_TAIL = (0.75, 0.02, 0.02)
_TAN = (0.85, 0.65, 0.40)


@dataclass(frozen=True)
class Primitive:
    """One solid primitive.

    Attributes:
        kind: one of :data:`PRIMITIVE_KINDS`.
        centre: world position of the primitive's local origin.
        size: three numbers whose meaning depends on ``kind`` (all in the local frame, local +z is the
            primitive's axis):

            - ``box``: half extents ``(hx, hy, hz)``;
            - ``sphere``: radii ``(rx, ry, rz)`` (an ellipsoid when they differ);
            - ``cylinder``: ``(radius, half_height, 0)``, capped, axis local z;
            - ``cone``: ``(bottom_radius, half_height, top_radius)``, a capped frustum from z = -h
              (bottom) to z = +h (top); ``top_radius = 0`` is a pointed cone with its apex at +z;
            - ``torus``: ``(major_radius, minor_radius, 0)``, the ring in the local xy plane;
            - ``capsule``: ``(radius, half_length, 0)``, the segment from z = -h to z = +h.
        rotation: Euler angles in degrees ``(rx, ry, rz)``: local-to-world rotation ``Rz @ Ry @ Rx``
            (about x first). ``(0, 90, 0)`` turns the local +z axis to world +X.
        colour: RGB in [0, 1].
    """

    kind: str
    centre: Vec3
    size: Vec3
    rotation: Vec3 = (0.0, 0.0, 0.0)
    colour: RGB = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        assert self.kind in PRIMITIVE_KINDS, self.kind
        assert len(self.centre) == 3 and len(self.size) == 3 and len(self.rotation) == 3

    def rotation_matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """[3, 3] local-to-world rotation (columns are the local axes in world coordinates)."""
        return euler_matrix(self.rotation, dtype)

    def support(self, u: Tensor) -> Tensor:
        """Support function ``max_{p in primitive} u . p`` for unit directions ``u`` [M, 3] -> [M]."""
        u = u.to(torch.float64)
        c = torch.tensor(self.centre, dtype=torch.float64)
        ul = u @ self.rotation_matrix()  # rows: R^T u, the direction in the local frame
        a, b, cc = self.size
        lat = (1.0 - ul[:, 2] ** 2).clamp_min(0.0).sqrt()
        if self.kind == "box":
            ext = (ul.abs() * torch.tensor([a, b, cc], dtype=torch.float64)).sum(-1)
        elif self.kind == "sphere":
            ext = (ul * torch.tensor([a, b, cc], dtype=torch.float64)).norm(dim=-1)
        elif self.kind == "cylinder":
            ext = b * ul[:, 2].abs() + a * lat
        elif self.kind == "cone":
            ext = torch.maximum(b * ul[:, 2] + cc * lat, -b * ul[:, 2] + a * lat)
        elif self.kind == "torus":
            ext = a * lat + b
        else:  # capsule
            ext = b * ul[:, 2].abs() + a
        return u @ c + ext

    def transformed(self, scale: float, offset: Sequence[float]) -> "Primitive":
        """The primitive after ``p -> scale * (p - offset)`` (a similarity: sizes scale too)."""
        centre = tuple(scale * (c - o) for c, o in zip(self.centre, offset))
        return replace(self, centre=centre, size=tuple(scale * s for s in self.size))  # type: ignore[arg-type]


@dataclass(frozen=True)
class WorldObject:
    """One object of the world.

    Attributes:
        kind: its key in :data:`KINDS` (``"mug"``).
        colour: its key in :data:`COLOURS` (``"red"``).
        primitives: the solid parts; the object is their union.
        has_front_back: whether front (+X) and back (-X) views differ by design.
        caption: ``"a red mug"``.
        seed: the seed of its variation.
    """

    kind: str
    colour: str
    primitives: Tuple[Primitive, ...]
    has_front_back: bool
    caption: str
    seed: int

    def bounding_radius(self) -> float:
        """Radius of the smallest origin-centred ball holding the object (to ~1e-3 relative)."""
        u = fibonacci_directions(4096)
        return float(torch.stack([p.support(u) for p in self.primitives]).max())

    def bounds(self) -> Tuple[Tensor, Tensor]:
        """Axis-aligned bounding box ``(lo [3], hi [3])`` (float64, exact for the primitives above)."""
        return _bounds(self.primitives)


# ----------------------------------------------------------------------------------------- geometry helpers
def euler_matrix(rotation: Sequence[float], dtype: torch.dtype = torch.float64) -> Tensor:
    """``Rz @ Ry @ Rx`` for Euler angles in degrees ``(rx, ry, rz)``."""
    rx, ry, rz = (math.radians(float(v)) for v in rotation)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    Rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return (Rz @ Ry @ Rx).to(dtype)


def fibonacci_directions(n: int) -> Tensor:
    """``n`` nearly uniform unit vectors [n, 3] (float64) on a Fibonacci spiral."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = (1.0 - z * z).clamp_min(0).sqrt()
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)


def _bounds(prims: Sequence[Primitive]) -> Tuple[Tensor, Tensor]:
    axes = torch.eye(3, dtype=torch.float64)
    hi = torch.stack([p.support(axes) for p in prims]).max(0).values
    lo = -torch.stack([p.support(-axes) for p in prims]).max(0).values
    return lo, hi


def _normalise(prims: Sequence[Primitive], radius: float = TARGET_RADIUS) -> Tuple[Primitive, ...]:
    """Centre the bounding box on the origin, then scale the bounding sphere to ``radius``."""
    lo, hi = _bounds(prims)
    offset = ((lo + hi) * 0.5).tolist()
    moved = [p.transformed(1.0, offset) for p in prims]
    u = fibonacci_directions(4096)
    r = float(torch.stack([p.support(u) for p in moved]).max())
    return tuple(p.transformed(radius / r, (0.0, 0.0, 0.0)) for p in moved)


def _close(a: RGB, b: RGB, tol: float = 0.35) -> bool:
    return math.dist(a, b) < tol


def _accent(main: RGB, preferred: RGB, fallback: RGB) -> RGB:
    """``preferred`` unless it is too close to ``main`` to be seen, then ``fallback``."""
    return fallback if _close(main, preferred) else preferred


def _shade(c: RGB, k: float) -> RGB:
    return tuple(min(1.0, max(0.0, k * v)) for v in c)  # type: ignore[return-value]


def _u(rng: random.Random, lo: float, hi: float) -> float:
    return rng.uniform(lo, hi)


# Short constructors used by the builders (natural coordinates: ground z = 0, front +X).
def _prim(kind: str, c: Sequence[float], size: Sequence[float], rot: Sequence[float], col: RGB) -> Primitive:
    f3 = lambda v: tuple(float(x) for x in v)  # noqa: E731
    return Primitive(kind, f3(c), f3(size), f3(rot), col)  # type: ignore[arg-type]


def box(c: Vec3, half: Vec3, col: RGB, rot: Vec3 = (0, 0, 0)) -> Primitive:
    return _prim("box", c, half, rot, col)


def sphere(c: Vec3, r: float | Vec3, col: RGB, rot: Vec3 = (0, 0, 0)) -> Primitive:
    return _prim("sphere", c, (r, r, r) if isinstance(r, (int, float)) else r, rot, col)


def cylinder(c: Vec3, r: float, h: float, col: RGB, rot: Vec3 = (0, 0, 0)) -> Primitive:
    return _prim("cylinder", c, (r, h, 0.0), rot, col)


def cone(c: Vec3, r_bottom: float, h: float, col: RGB, rot: Vec3 = (0, 0, 0), r_top: float = 0.0) -> Primitive:
    return _prim("cone", c, (r_bottom, h, r_top), rot, col)


def torus(c: Vec3, R: float, r: float, col: RGB, rot: Vec3 = (0, 0, 0)) -> Primitive:
    return _prim("torus", c, (R, r, 0.0), rot, col)


def capsule(c: Vec3, r: float, h: float, col: RGB, rot: Vec3 = (0, 0, 0)) -> Primitive:
    return _prim("capsule", c, (r, h, 0.0), rot, col)


# Rotations turning the local +z axis onto a world axis.
TO_X = (0.0, 90.0, 0.0)  # local +z -> world +X
TO_Y = (-90.0, 0.0, 0.0)  # local +z -> world +Y


# ----------------------------------------------------------------------------------------- builders
def build_mug(rng: random.Random, col: RGB) -> List[Primitive]:
    """Cylinder body with a coffee surface, a ring handle on its right (+Y) and a logo on its front (+X)."""
    r, h = _u(rng, 0.26, 0.34), _u(rng, 0.28, 0.40)
    logo_col = _accent(col, _LIGHT, _DARK)
    parts = [
        cylinder((0, 0, h), r, h, col),
        cylinder((0, 0, 2 * h + 0.004), 0.86 * r, 0.006, (0.30, 0.17, 0.08)),
    ]
    R_h = _u(rng, 0.45, 0.6) * h
    parts.append(torus((0, r + 0.55 * R_h, h), R_h, _u(rng, 0.045, 0.06), col, rot=TO_X))
    logo_r = _u(rng, 0.45, 0.6) * min(h, r)
    if rng.random() < 0.5:  # round logo
        parts.append(cylinder((r - 0.015, 0, h), logo_r, 0.03, logo_col, rot=TO_X))
    else:  # square logo
        parts.append(box((r - 0.02, 0, h), (0.04, 0.8 * logo_r, 0.8 * logo_r), logo_col))
    return parts


def build_chair(rng: random.Random, col: RGB) -> List[Primitive]:
    """Seat on four legs, a tall backrest at the back (-X), a contrasting cushion, optional armrests."""
    sx, sy = _u(rng, 0.24, 0.30), _u(rng, 0.24, 0.30)
    hs, th = _u(rng, 0.38, 0.48), 0.035
    back_h = _u(rng, 0.40, 0.55)
    cushion = _accent(col, (0.90, 0.80, 0.55), (0.20, 0.35, 0.75))
    leg = _shade(col, 0.7)
    parts = [box((0, 0, hs), (sx, sy, th), col)]
    round_legs = rng.random() < 0.5
    for lx in (-1, 1):
        for ly in (-1, 1):
            c = (lx * (sx - 0.035), ly * (sy - 0.035), (hs - th) / 2)
            if round_legs:
                parts.append(cylinder(c, 0.028, (hs - th) / 2, leg))
            else:
                parts.append(box(c, (0.025, 0.025, (hs - th) / 2), leg))
    parts.append(box((-sx + 0.03, 0, hs + th + back_h / 2), (0.03, sy, back_h / 2), col))
    parts.append(box((0.03, 0, hs + th + 0.025), (sx - 0.04, sy - 0.03, 0.025), cushion))
    if rng.random() < 0.4:  # armrests
        for ly in (-1, 1):
            parts.append(box((0.0, ly * (sy - 0.02), hs + 0.2), (sx - 0.02, 0.025, 0.02), leg))
            parts.append(box((sx - 0.05, ly * (sy - 0.02), hs + 0.1), (0.02, 0.02, 0.1), leg))
    return parts


def build_house(rng: random.Random, col: RGB) -> List[Primitive]:
    """Box walls, a gable roof (ridge along Y), a door and windows on the front (+X), a chimney at the back."""
    wx, wy, wz = _u(rng, 0.30, 0.38), _u(rng, 0.32, 0.42), _u(rng, 0.20, 0.27)
    roof_col = rng.choice([(0.55, 0.18, 0.12), (0.30, 0.30, 0.33), (0.35, 0.22, 0.12)])
    roof_col = _accent(col, roof_col, (0.25, 0.25, 0.28))
    d = 1.08 * wx  # half diagonal of the 45-degree roof prism
    a = d / math.sqrt(2.0)
    parts = [
        box((0, 0, wz), (wx, wy, wz), col),
        box((0, 0, 2 * wz), (a, 1.06 * wy, a), roof_col, rot=(0, 45, 0)),
    ]
    door_h = 0.62 * wz
    parts.append(box((wx + 0.008, 0, door_h), (0.02, 0.07, door_h), (0.30, 0.16, 0.06)))
    n_win = rng.choice([1, 2])
    glass = _accent(col, _GLASS, _LIGHT)
    for side in (-1, 1):
        for k in range(n_win):
            z = wz * (1.15 if n_win == 1 else (0.7 + 0.75 * k))
            parts.append(box((wx + 0.006, side * 0.55 * wy, z), (0.015, 0.075, 0.06 if n_win == 2 else 0.08), glass))
    if rng.random() < 0.8:  # chimney on the back slope
        parts.append(box((-0.5 * wx, 0.45 * wy, 2 * wz + 0.55 * d), (0.05, 0.05, 0.2 * d + 0.05), (0.45, 0.22, 0.16)))
    return parts


def build_snowman(rng: random.Random, col: RGB) -> List[Primitive]:
    """Two or three snow balls, a hat and a scarf of the named colour, a carrot nose, eyes and buttons on +X."""
    three = rng.random() < 0.6
    if three:
        radii = [_u(rng, 0.26, 0.30), _u(rng, 0.19, 0.22), _u(rng, 0.14, 0.16)]
    else:
        radii = [_u(rng, 0.28, 0.32), _u(rng, 0.17, 0.20)]
    # each ball overlaps the one below by 18% of the sum of their radii
    centres = [radii[0]]
    for i in range(1, len(radii)):
        centres.append(centres[-1] + 0.82 * (radii[i - 1] + radii[i]))
    parts = [sphere((0, 0, cz), r, _SNOW) for r, cz in zip(radii, centres)]
    hr, hz = radii[-1], centres[-1]
    accent = _accent(_SNOW, col, (0.8, 0.1, 0.1))  # a white hat would vanish against the snow
    nose = _u(rng, 0.07, 0.10)  # half length of the carrot, its base sunk slightly into the head
    parts.append(cone((0.92 * hr + nose, 0, hz), 0.035, nose, _CARROT, rot=TO_X))
    for s in (-1, 1):
        parts.append(sphere((hr * 0.86, s * 0.38 * hr, hz + 0.3 * hr), 0.024, _DARK))
    body_r, body_z = radii[-2], centres[-2]
    for k in (-1, 0, 1):
        ang = math.radians(25 * k)
        parts.append(sphere((body_r * 0.97 * math.cos(ang), 0, body_z + body_r * 0.97 * math.sin(ang)), 0.028, _DARK))
    if rng.random() < 0.75:  # top hat
        parts.append(cylinder((0, 0, hz + 0.85 * hr), 1.05 * hr, 0.015, accent))
        th = _u(rng, 0.08, 0.12)
        parts.append(cylinder((0, 0, hz + 0.85 * hr + th), 0.68 * hr, th, accent))
    parts.append(torus((0, 0, hz - 0.8 * hr), 0.72 * hr, 0.045, accent))
    return parts


def build_car(rng: random.Random, col: RGB) -> List[Primitive]:
    """Body and a cabin set back toward the rear, four wheels, headlights, grille and windscreen at +X, tail
    lights and a number plate at -X."""
    L, W, H = _u(rng, 0.50, 0.58), _u(rng, 0.22, 0.26), _u(rng, 0.09, 0.12)
    wr = _u(rng, 0.09, 0.11)
    zb = wr + H * 0.6
    parts = [box((0, 0, zb), (L, W, H), col)]
    cab_l, cab_h = _u(rng, 0.22, 0.28), _u(rng, 0.08, 0.11)
    cab_x = -0.2 * L
    parts.append(box((cab_x, 0, zb + H + cab_h), (cab_l, 0.9 * W, cab_h), col))
    glass = _accent(col, _GLASS, (0.12, 0.12, 0.16))
    parts.append(box((cab_x + cab_l + 0.004, 0, zb + H + cab_h), (0.01, 0.8 * W, 0.75 * cab_h), glass))  # windscreen
    for s in (-1, 1):
        parts.append(box((cab_x, s * (0.9 * W + 0.004), zb + H + cab_h), (0.8 * cab_l, 0.01, 0.7 * cab_h), glass))
    for wx in (-0.62 * L, 0.62 * L):
        for s in (-1, 1):
            parts.append(cylinder((wx, s * (W - 0.03), wr), wr, 0.04, _DARK, rot=TO_Y))
    head = _accent(col, _BULB, _LIGHT)
    for s in (-1, 1):
        parts.append(box((L + 0.005, s * 0.7 * W, zb + 0.3 * H), (0.015, 0.045, 0.03), head))
        tail = _accent(col, _TAIL, (1.0, 0.55, 0.0))
        parts.append(box((-L - 0.005, s * 0.75 * W, zb + 0.35 * H), (0.015, 0.04, 0.025), tail))
    parts.append(box((L + 0.004, 0, zb - 0.1 * H), (0.012, 0.4 * W, 0.35 * H), _DARK))  # grille
    plate = _accent(col, (0.95, 0.85, 0.2), _LIGHT)
    parts.append(box((-L - 0.004, 0, zb - 0.1 * H), (0.012, 0.3 * W, 0.3 * H), plate))  # number plate
    if rng.random() < 0.35:  # rear spoiler
        parts.append(box((-L + 0.04, 0, zb + H + 0.07), (0.035, W, 0.012), _DARK))
        for s in (-1, 1):
            parts.append(box((-L + 0.04, s * 0.7 * W, zb + H + 0.03), (0.012, 0.012, 0.035), _DARK))
    return parts


def build_lamp(rng: random.Random, col: RGB) -> List[Primitive]:
    """Desk lamp: a base, a pole at the back, an arm reaching forward and a tilted shade lit toward +X."""
    base_r = _u(rng, 0.16, 0.2)
    pole_h = _u(rng, 0.45, 0.6)
    px = -0.12
    parts = [cylinder((px + 0.04, 0, 0.025), base_r, 0.025, col)]
    parts.append(cylinder((px, 0, 0.05 + pole_h / 2), 0.022, pole_h / 2, _shade(col, 0.6)))
    arm_len = _u(rng, 0.18, 0.26)
    top = 0.05 + pole_h
    parts.append(capsule((px + arm_len / 2, 0, top), 0.02, arm_len / 2, _shade(col, 0.6), rot=TO_X))
    tilt = _u(rng, 50, 65)  # degrees the shade's opening turns from straight down toward +X
    shade_h, shade_r = _u(rng, 0.09, 0.12), _u(rng, 0.12, 0.15)
    # Ry(ry) turns local +z to (sin ry, 0, cos ry): the narrow top (+z) points up and back, so the wide
    # opening (-z), lit by the bulb disc, faces down and forward.
    ry = -tilt
    axis = (math.sin(math.radians(ry)), 0.0, math.cos(math.radians(ry)))
    sc = (px + arm_len + 0.02 - axis[0] * shade_h, 0.0, top - axis[2] * shade_h - 0.02)
    parts.append(cone(sc, shade_r, shade_h, col, rot=(0, ry, 0), r_top=0.35 * shade_r))
    bulb_c = tuple(sc[i] - axis[i] * (shade_h + 0.004) for i in range(3))
    parts.append(cylinder(bulb_c, 0.92 * shade_r, 0.006, _accent(col, _BULB, _LIGHT), rot=(0, ry, 0)))
    return parts


def build_penguin(rng: random.Random, col: RGB) -> List[Primitive]:
    """Egg body with a white belly and an orange beak and feet on the front (+X), flippers on the sides."""
    bw, bh = _u(rng, 0.20, 0.24), _u(rng, 0.30, 0.36)
    belly = _accent(col, _LIGHT, (0.95, 0.80, 0.20))
    parts = [sphere((0, 0, bh), (bw, 0.95 * bw, bh), col)]
    parts.append(sphere((0.35 * bw, 0, 0.92 * bh), (0.72 * bw, 0.75 * bw, 0.8 * bh), belly))
    hr = _u(rng, 0.13, 0.16)
    hz = 2 * bh + 0.6 * hr
    parts.append(sphere((0.02, 0, hz), hr, col))
    parts.append(cone((hr + 0.05, 0, hz - 0.1 * hr), 0.04, 0.05, _CARROT, rot=TO_X))
    for s in (-1, 1):
        parts.append(sphere((0.75 * hr, s * 0.42 * hr, hz + 0.25 * hr), 0.03, _LIGHT))
        parts.append(sphere((0.8 * hr + 0.02, s * 0.42 * hr, hz + 0.25 * hr), 0.015, _DARK))
        parts.append(sphere((0.0, s * bw * 0.98, 1.05 * bh), (0.06, 0.035, 0.55 * bh), col, rot=(s * 12, 0, 0)))
        parts.append(sphere((0.45 * bw, s * 0.45 * bw, 0.03), (0.1, 0.055, 0.03), _CARROT))
    return parts


def build_teapot(rng: random.Random, col: RGB) -> List[Primitive]:
    """Round body, a lid with a knob, a spout and a painted flower at the front (+X), a ring handle at the back."""
    bw, bh = _u(rng, 0.26, 0.32), _u(rng, 0.18, 0.24)
    parts = [sphere((0, 0, bh), (bw, bw, bh), col)]
    parts.append(cylinder((0, 0, 1.9 * bh), 0.55 * bw, 0.02, _shade(col, 0.8)))
    parts.append(sphere((0, 0, 1.9 * bh + 0.05), 0.045, _accent(col, _LIGHT, _DARK)))
    sl, tilt = _u(rng, 0.13, 0.18), _u(rng, 40, 55)
    ry = 90.0 - tilt  # spout axis leaning forward and up
    ax = (math.sin(math.radians(ry)), 0.0, math.cos(math.radians(ry)))
    sc = (0.85 * bw + ax[0] * sl, 0.0, 1.35 * bh + ax[2] * sl)
    parts.append(cone(sc, 0.06, sl, col, rot=(0, ry, 0), r_top=0.03))
    parts.append(torus((-bw - 0.02, 0, bh * 1.05), _u(rng, 0.10, 0.13), 0.035, col, rot=(90, 0, 0)))
    # a painted flower on the front, under the spout: a contrasting disc with a yellow heart
    paint = _accent(col, _LIGHT, (0.85, 0.1, 0.3))
    fz, fr = 0.9 * bh, 0.45 * bh
    fx = bw * math.sqrt(max(0.0, 1.0 - ((fz + fr - bh) / bh) ** 2))  # body surface at the flower's top
    parts.append(cylinder((fx, 0, fz), fr, 0.02, paint, rot=TO_X))
    parts.append(cylinder((fx + 0.015, 0, fz), 0.35 * fr, 0.02, _accent(paint, (0.95, 0.8, 0.1), (0.9, 0.3, 0.1)), rot=TO_X))
    return parts


def build_robot(rng: random.Random, col: RGB) -> List[Primitive]:
    """Box body on two legs, a box head with glowing eyes and a chest panel on the front, a backpack behind."""
    bx, by, bz = _u(rng, 0.14, 0.18), _u(rng, 0.18, 0.22), _u(rng, 0.17, 0.21)
    leg_h = _u(rng, 0.12, 0.17)
    grey = _accent(col, (0.55, 0.56, 0.6), (0.3, 0.3, 0.32))
    eye = _accent(col, (0.1, 0.9, 0.95), (1.0, 0.9, 0.2))
    parts = []
    for s in (-1, 1):
        parts.append(box((0, s * 0.45 * by, leg_h), (0.06, 0.05, leg_h), grey))
        parts.append(box((0.03, s * 0.45 * by, 0.02), (0.09, 0.06, 0.02), grey))
    bzc = 2 * leg_h + bz
    parts.append(box((0, 0, bzc), (bx, by, bz), col))
    parts.append(box((bx + 0.006, 0, bzc + 0.2 * bz), (0.012, 0.6 * by, 0.4 * bz), _accent(col, _LIGHT, grey)))
    parts.append(box((-bx - 0.05, 0, bzc + 0.1 * bz), (0.05, 0.7 * by, 0.6 * bz), _shade(grey, 0.7)))  # backpack
    hx, hh = _u(rng, 0.10, 0.13), _u(rng, 0.09, 0.12)
    hzc = bzc + bz + 0.02 + hh
    parts.append(box((0, 0, hzc), (hx, 1.15 * hx, hh), grey))
    for s in (-1, 1):
        parts.append(sphere((hx + 0.005, s * 0.5 * hx, hzc + 0.15 * hh), 0.03, eye))
        parts.append(capsule((0, s * (by + 0.04), bzc), 0.035, 0.8 * bz, grey, rot=(s * 12, 0, 0)))
    if rng.random() < 0.6:  # antenna
        parts.append(cylinder((0, 0, hzc + hh + 0.05), 0.01, 0.05, _DARK))
        parts.append(sphere((0, 0, hzc + hh + 0.11), 0.03, (0.9, 0.1, 0.1)))
    return parts


def build_table(rng: random.Random, col: RGB) -> List[Primitive]:
    """A square or round table top on four legs or one pedestal."""
    h = _u(rng, 0.45, 0.6)
    parts = []
    if rng.random() < 0.5:
        s = _u(rng, 0.38, 0.48)
        parts.append(box((0, 0, h), (s, s, 0.03), col))
        for lx in (-1, 1):
            for ly in (-1, 1):
                leg_h = (h - 0.03) / 2
                parts.append(box((lx * (s - 0.05), ly * (s - 0.05), leg_h), (0.025, 0.025, leg_h), _shade(col, 0.7)))
    else:
        r = _u(rng, 0.38, 0.48)
        parts.append(cylinder((0, 0, h), r, 0.03, col))
        parts.append(cylinder((0, 0, h / 2), 0.04, h / 2, _shade(col, 0.7)))
        parts.append(cylinder((0, 0, 0.02), 0.22, 0.02, _shade(col, 0.7)))
    return parts


def build_tree(rng: random.Random, col: RGB) -> List[Primitive]:
    """A brown trunk under a pine (1-3 stacked cones) or a round canopy of the named colour."""
    th = _u(rng, 0.15, 0.25)
    parts = [cylinder((0, 0, th / 2), 0.06, th / 2, _accent(col, _WOOD, (0.3, 0.2, 0.1)))]
    if rng.random() < 0.6:
        tiers = rng.choice([1, 2, 3])
        z, r, hh = th, _u(rng, 0.30, 0.36), _u(rng, 0.22, 0.3) / tiers ** 0.5
        for _ in range(tiers):
            parts.append(cone((0, 0, z + hh), r, hh, col))
            z += 1.2 * hh
            r *= 0.78
    else:
        r = _u(rng, 0.25, 0.32)
        parts.append(sphere((0, 0, th + 0.8 * r), (r, r, _u(rng, 0.9, 1.15) * r), col))
    return parts


def build_donut(rng: random.Random, col: RGB) -> List[Primitive]:
    """A flat dough ring with an icing ring of the named colour on top and a few sprinkles."""
    R, r = _u(rng, 0.3, 0.36), _u(rng, 0.14, 0.18)
    dough = _accent(col, _TAN, (0.6, 0.4, 0.2))
    parts = [torus((0, 0, r), R, r, dough), torus((0, 0, r + 0.35 * r), R, 0.8 * r, col)]
    n = rng.choice([6, 8, 10])
    for k in range(n):
        a = 2 * math.pi * k / n + rng.uniform(-0.2, 0.2)
        sc = (R * math.cos(a), R * math.sin(a), r + 0.35 * r + 0.8 * r + 0.005)
        spr = rng.choice([(0.95, 0.95, 0.95), (0.2, 0.5, 0.95), (0.95, 0.8, 0.1), (0.9, 0.2, 0.5)])
        parts.append(capsule(sc, 0.015, 0.03, spr, rot=(0, 90, math.degrees(a) + rng.uniform(0, 180))))
    return parts


def build_rocket(rng: random.Random, col: RGB) -> List[Primitive]:
    """A white body with a nose cone, 3 or 4 fins of the named colour and a nozzle."""
    r, h = _u(rng, 0.09, 0.12), _u(rng, 0.25, 0.32)
    body = _accent(col, _LIGHT, (0.7, 0.7, 0.72))
    z0 = 0.08
    parts = [
        cylinder((0, 0, z0 + h), r, h, body),
        cone((0, 0, z0 + 2 * h + 0.1), r, 0.1, col),
        cone((0, 0, z0 - 0.02), 0.8 * r, 0.05, _DARK, r_top=0.6 * r),
    ]
    n = rng.choice([3, 4])
    for k in range(n):
        a = 360.0 * k / n + 45.0 * (n == 4)
        ca, sa = math.cos(math.radians(a)), math.sin(math.radians(a))
        parts.append(box(((r + 0.05) * ca, (r + 0.05) * sa, z0 + 0.1), (0.07, 0.008, 0.1), col, rot=(0, 0, a)))
    return parts


def build_mushroom(rng: random.Random, col: RGB) -> List[Primitive]:
    """A pale stem under a flattened cap of the named colour with a ring of pale spots."""
    sh, sr = _u(rng, 0.18, 0.26), _u(rng, 0.07, 0.1)
    cr, ch = _u(rng, 0.3, 0.38), _u(rng, 0.14, 0.2)
    pale = _accent(col, (0.95, 0.92, 0.85), (0.6, 0.55, 0.5))
    parts = [cylinder((0, 0, sh / 2 + 0.02), sr, sh / 2 + 0.02, pale), sphere((0, 0, sh + 0.02), (cr, cr, ch), col)]
    n = rng.choice([5, 6, 8])
    for k in range(n):
        a = 2 * math.pi * k / n
        rho = 0.6 * cr
        z = sh + 0.02 + ch * math.sqrt(max(0.0, 1 - (rho / cr) ** 2))
        parts.append(sphere((rho * math.cos(a), rho * math.sin(a), z), 0.04, pale))
    parts.append(sphere((0, 0, sh + 0.02 + ch), 0.045, pale))
    return parts


Builder = Callable[[random.Random, RGB], List[Primitive]]

#: the kinds of object, each a builder ``(rng, rgb) -> primitives`` in natural coordinates.
KINDS: Dict[str, Builder] = {
    "mug": build_mug,
    "chair": build_chair,
    "house": build_house,
    "snowman": build_snowman,
    "car": build_car,
    "lamp": build_lamp,
    "penguin": build_penguin,
    "teapot": build_teapot,
    "robot": build_robot,
    "table": build_table,
    "tree": build_tree,
    "donut": build_donut,
    "rocket": build_rocket,
    "mushroom": build_mushroom,
}

#: kinds whose front (azimuth 0) and back (azimuth 180) views differ by design (Janus score applies).
FRONT_BACK_KINDS = frozenset({"mug", "chair", "house", "snowman", "car", "lamp", "penguin", "teapot", "robot"})


# ----------------------------------------------------------------------------------------- captions, prompts
def caption_for(kind: str, colour: str) -> str:
    """``"a red mug"``, ``"an orange car"``."""
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {kind}"


def caption_seed(caption: str) -> int:
    """The variation seed of a caption (first 4 bytes of its SHA-256, so stable across runs)."""
    return int.from_bytes(hashlib.sha256(caption.encode("utf-8")).digest()[:4], "little")


def vocabulary() -> str:
    """One sentence naming what the world knows (used in error messages)."""
    return (
        f"the procedural world knows prompts '[a|an] <colour> <kind>' with kinds {sorted(KINDS)} and colours "
        f"{list(COLOURS)} (e.g. 'a red mug', optionally followed by ', front view')"
    )


def make_object(kind: str, colour: Optional[str] = None, seed: int = 0) -> WorldObject:
    """Build one object of ``kind`` (a key of :data:`KINDS`) in ``colour`` (a key of :data:`COLOURS`;
    None: drawn from :data:`DEFAULT_PALETTE` with the seed), its variation drawn from ``seed``.

    The result is centred (bounding box centre at the origin) and scaled to a bounding radius of
    :data:`TARGET_RADIUS`.
    """
    if kind not in KINDS:
        raise PromptError(f"unknown object kind {kind!r}; {vocabulary()}")
    rng = random.Random(int(seed))
    if colour is None:
        colour = rng.choice(DEFAULT_PALETTE)
    colour = COLOUR_ALIASES.get(colour, colour)
    if colour not in COLOURS:
        raise PromptError(f"unknown colour {colour!r}; {vocabulary()}")
    prims = _normalise(KINDS[kind](rng, COLOURS[colour]))
    return WorldObject(
        kind=kind,
        colour=colour,
        primitives=prims,
        has_front_back=kind in FRONT_BACK_KINDS,
        caption=caption_for(kind, colour),
        seed=int(seed),
    )


_VIEW_SUFFIX = re.compile(r"\s*,?\s*(?:" + "|".join(DIRECTIONS) + r")\s+view\s*$")


def _split_prompt(prompt: str) -> Optional[Tuple[Optional[str], str]]:
    """``(colour or None, kind)`` of a world prompt, or None."""
    text = prompt.strip().lower()
    text = _VIEW_SUFFIX.sub("", text).strip().rstrip(".!").strip()
    words = text.split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    if len(words) == 1 and words[0] in KINDS:
        return None, words[0]
    if len(words) == 2:
        colour = COLOUR_ALIASES.get(words[0], words[0])
        if colour in COLOURS and words[1] in KINDS:
            return colour, words[1]
    return None


def is_world_prompt(prompt: str) -> bool:
    """Whether :func:`parse_prompt` accepts ``prompt``."""
    return isinstance(prompt, str) and _split_prompt(prompt) is not None


def parse_prompt(prompt: str, seed: Optional[int] = None) -> WorldObject:
    """The object a prompt names: ``"a red mug"``, ``"red mug"``, ``"A Red Mug"``, ``"a red mug, front view"``.

    A prompt without a colour (``"a mug"``) gets one drawn from the seed. The seed is, unless given, a hash
    of the canonical caption (``"a red mug"``; ``"a mug"`` for a colourless prompt), so one prompt always
    names one object. Raises :class:`~splatgen.errors.PromptError` listing the vocabulary otherwise.
    """
    parsed = _split_prompt(prompt) if isinstance(prompt, str) else None
    if parsed is None:
        raise PromptError(f"prompt {short(prompt)} is not an object of the procedural world; {vocabulary()}")
    colour, kind = parsed
    canonical = caption_for(kind, colour) if colour is not None else f"a {kind}"
    return make_object(kind, colour, caption_seed(canonical) if seed is None else seed)
