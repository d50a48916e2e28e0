"""What each row of a guidance call is conditioned on: a mix of the prompt's texts and the camera of the view.

Every guidance scores a batch of noisy inputs, one row per (view, prompt variant). A :class:`Conditioning`
says, for each row,

- which text: a convex combination of the entries of the guidance's prompt table, whose columns are
  :data:`TEXT_KEYS` — ``"uncond"`` (the empty prompt, classifier-free guidance's unconditional), ``"negative"``
  (the negative prompt; the empty prompt when none is set), ``"prompt"`` (the plain prompt) and one column per
  view direction (``"<prompt>, front view"`` ...). A one-hot row is one text; Perp-Neg's interpolated positive
  prompt (``0.7 front + 0.3 side``) is a mix. UNet guidance mixes the text embeddings with these weights (as
  Perp-Neg and threestudio do); the world's exact oracle mixes the *distributions* (its views of each text),
  which is the exact meaning of a mixture for a model that knows the data;
- which camera: elevation and azimuth (degrees) and distance (world units) of the view the row scores, in the
  conventions of :mod:`splatgen.cameras`. Priors that ignore the camera (today's text-conditioned ones) read
  only the text; Perp-Neg's weights and camera-conditioned priors read the camera from here.

Classifier-free guidance's batch is ``[null x B, view x B]`` (:func:`cfg_conditioning`); the losses of
:mod:`splatgen.guidance.losses` build other batches (negatives, intervals) the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..cameras import DIRECTIONS, Cameras

#: the columns of :attr:`Conditioning.weights`: the prompt table every guidance holds after ``prepare_text``.
TEXT_KEYS: Tuple[str, ...] = ("uncond", "negative", "prompt", *DIRECTIONS)
KEY_INDEX: Dict[str, int] = {k: i for i, k in enumerate(TEXT_KEYS)}
#: the text classifier-free guidance measures against: the negative prompt (the empty prompt when none is set)
NULL_KEY = "negative"


@dataclass
class Conditioning:
    """N rows of conditioning (see the module docstring).

    Attributes:
        weights: [N, K] float32, K = len(TEXT_KEYS); each row non-negative, summing to 1.
        elevation, azimuth: [N] degrees of the row's view; radius: [N] its distance from the origin.
    """

    weights: Tensor
    elevation: Tensor
    azimuth: Tensor
    radius: Tensor

    def __len__(self) -> int:
        return self.weights.shape[0]

    @staticmethod
    def of(texts: Sequence[Union[str, Mapping[str, float]]], cams: Optional[Cameras] = None) -> "Conditioning":
        """Rows from text keys (``"front"``) or mixes (``{"front": 0.7, "side": 0.3}``), one per camera of ``cams``
        (None: angles unknown, NaN)."""
        w = torch.zeros(len(texts), len(TEXT_KEYS), dtype=torch.float32)
        for i, t in enumerate(texts):
            for key, value in ({t: 1.0} if isinstance(t, str) else dict(t)).items():
                if key not in KEY_INDEX:
                    raise ValueError(f"unknown prompt key {key!r}; expected one of {list(TEXT_KEYS)}")
                w[i, KEY_INDEX[key]] += float(value)
        if cams is None:
            nan = torch.full((len(texts),), float("nan"))
            return Conditioning(w, nan, nan.clone(), nan.clone())
        if len(cams) != len(texts):
            raise ValueError(f"{len(texts)} rows of text for {len(cams)} cameras")
        return Conditioning(w, cams.elevation.detach().float().cpu(), cams.azimuth.detach().float().cpu(),
                            cams.radius.detach().float().cpu())

    @staticmethod
    def cat(parts: Sequence["Conditioning"]) -> "Conditioning":
        return Conditioning(*(torch.cat([getattr(p, f) for p in parts]) for f in ("weights", "elevation", "azimuth", "radius")))

    def key(self, i: int) -> Optional[str]:
        """The single text key of row ``i`` when the row is one text (None for a mix)."""
        nz = (self.weights[i] != 0).nonzero().flatten().tolist()
        return TEXT_KEYS[nz[0]] if len(nz) == 1 else None


def view_texts(cams: Cameras) -> List[str]:
    """Each view's direction key (``"front"`` ...), DreamFusion's view-dependent prompt."""
    return list(cams.directions)


def cfg_conditioning(cams: Cameras) -> Conditioning:
    """Classifier-free guidance's 2B rows: the negative (or empty) prompt for every view, then each view's
    direction prompt."""
    B = len(cams)
    return Conditioning.cat([Conditioning.of([NULL_KEY] * B, cams), Conditioning.of(view_texts(cams), cams)])


def directions_conditioning(directions: Sequence[Optional[str]]) -> Conditioning:
    """The CFG rows for view words without cameras (``None``: the plain prompt); the angles are unknown (NaN)."""
    texts = ["prompt" if d is None else d for d in directions]
    for d in texts:
        if d not in KEY_INDEX or d in ("uncond", "negative"):
            raise ValueError(f"unknown view direction {d!r}; expected one of {list(DIRECTIONS)}")
    return Conditioning.cat([Conditioning.of([NULL_KEY] * len(texts)), Conditioning.of(texts)])


# ----------------------------------------------------------------------------------------------- Perp-Neg
#: Perp-Neg's negative weights as ``a exp(-b r) + c`` of the interpolation fraction r (Armandpour et al. 2023,
#: "Re-imagine the Negative Prompt Algorithm", Sec. 5; the curves threestudio ships for Stable Diffusion, whose
#: c it rounds to -2.426 and -0.606: here c = -a exp(-b) exactly, so a view is never pushed from its own direction).
#: front half (r = 1 - |azimuth| / 90: 1 at the front, 0 at the side): the front negative weighs f(r), the
#: side negative f(1 - r): 0 for the view's own direction, 1.57 for the other one.
PERP_NEG_FRONT_SIDE = (4.0, 0.5, -4.0 * math.exp(-0.5))
#: back half (r = 2 - |azimuth| / 90: 1 at the side, 0 at the back): the side negative weighs f_sb(r)
#: (0.39 at the back, 0 at the side), the front negative f_fb(r) (1.97 at the back, 1.57 at the side).
PERP_NEG_SIDE_BACK = (1.0, 0.5, -math.exp(-0.5))
PERP_NEG_FRONT_BACK = (1.0, 0.5, 0.967)


def _decay(abc: Tuple[float, float, float], r: Tensor) -> Tensor:
    a, b, c = abc
    return (a * torch.exp(-b * r) + c).clamp_min(0.0)


def perp_neg_conditioning(cams: Cameras, overhead_elevation: float = 60.0, weight: float = 1.0) -> Tuple[Conditioning, Conditioning, Tensor]:
    """Perp-Neg's rows for B views: the positive prompt of each view and its two negative prompts.

    The positive prompt interpolates the direction prompts by azimuth (front -> side over the front half, side
    -> back over the back half); the negatives are the directions the view must *not* show, weighted by how far
    the view is from them. Overhead views (elevation above ``overhead_elevation``) keep the overhead prompt and
    get no negatives (weight 0).

    Returns:
        (positive [B rows], negatives [2B rows: first negative of every view, then the second], weights [B, 2]
        float32 >= 0, already multiplied by ``weight``).
    """
    az = torch.remainder(cams.azimuth.detach().float().cpu() + 180.0, 360.0) - 180.0
    a = az.abs()
    B = len(cams)
    pos: List[Dict[str, float]] = []
    neg1: List[str] = []
    neg2: List[str] = []
    w = torch.zeros(B, 2)
    for i in range(B):
        if cams.directions[i] == "overhead" or float(cams.elevation[i]) > overhead_elevation:
            pos.append({"overhead": 1.0})
            neg1.append("front")
            neg2.append("side")
            continue
        if float(a[i]) <= 90.0:
            r = 1.0 - float(a[i]) / 90.0
            pos.append({"front": r, "side": 1.0 - r})
            neg1.append("front")
            neg2.append("side")
            rt = torch.tensor([r, 1.0 - r])
            w[i] = torch.stack([_decay(PERP_NEG_FRONT_SIDE, rt[:1])[0], _decay(PERP_NEG_FRONT_SIDE, rt[1:])[0]])
        else:
            r = 2.0 - float(a[i]) / 90.0
            pos.append({"side": r, "back": 1.0 - r})
            neg1.append("side")
            neg2.append("front")
            rt = torch.tensor([r])
            w[i] = torch.stack([_decay(PERP_NEG_SIDE_BACK, rt)[0], _decay(PERP_NEG_FRONT_BACK, rt)[0]])
    return (Conditioning.of(pos, cams), Conditioning.cat([Conditioning.of(neg1, cams), Conditioning.of(neg2, cams)]),
            w * float(weight))


def perpendicular_component(x: Tensor, y: Tensor, eps: float = 1e-12) -> Tensor:
    """The part of each sample of ``x`` orthogonal to the same sample of ``y`` ([B, ...] each, float32):
    ``x - <x, y> / |y|^2 y`` (``y = 0``: ``x`` unchanged)."""
    dims = tuple(range(1, x.dim()))
    dot = (x * y).sum(dim=dims, keepdim=True)
    norm2 = (y * y).sum(dim=dims, keepdim=True)
    return x - torch.where(norm2 > eps, dot / norm2.clamp_min(eps), torch.zeros_like(dot)) * y


def perp_neg_combine(eps_null: Tensor, eps_pos: Tensor, eps_negs: Sequence[Tensor], weights: Tensor) -> Tensor:
    """The conditional prediction Perp-Neg hands to classifier-free guidance:

        eps_cond = eps_pos - sum_i w_i perp(eps_neg_i - eps_null, eps_pos - eps_null)

    so that ``eps_null + s (eps_cond - eps_null) = eps_null + s [(eps_pos - eps_null) - sum_i w_i (...)_perp]``
    (Armandpour et al. 2023, eq. 9): each negative direction is removed only where it is orthogonal to the
    positive one, so a side view is pushed away from looking like the front without cancelling what the front
    and the side share (the object itself). ``weights`` [B, k] for the k negatives; all tensors float32.
    """
    pos = eps_pos - eps_null
    out = eps_pos.clone()
    for i, neg in enumerate(eps_negs):
        w = weights[:, i].to(out.device, out.dtype).view(-1, *([1] * (out.dim() - 1)))
        out = out - w * perpendicular_component(neg - eps_null, pos)
    return out


def angle_features(cond: Conditioning) -> Tensor:
    """[N, 5] camera features of each row for camera-conditioned networks: sin/cos of elevation and azimuth and
    the distance; NaN angles (unknown cameras) become 0."""
    el, az = torch.deg2rad(cond.elevation), torch.deg2rad(cond.azimuth)
    f = torch.stack([el.sin(), el.cos(), az.sin(), az.cos(), cond.radius], dim=-1)
    return torch.nan_to_num(f, nan=0.0)


__all__ = [
    "Conditioning", "KEY_INDEX", "NULL_KEY", "TEXT_KEYS", "angle_features", "cfg_conditioning",
    "directions_conditioning", "perp_neg_combine", "perp_neg_conditioning", "perpendicular_component", "view_texts",
]
