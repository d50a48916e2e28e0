"""Camera-conditioned, multi-view priors: the camera vector, cross-view attention and the model folder's spec.

A multi-view prior (MVDream, Shi et al. 2023; the bundled camera-aware prior of ``prior_training``) differs from a
text-to-image UNet in two ways, both expressed here on a plain diffusers ``UNet2DConditionModel``:

- **The camera of each view** enters as a vector added to the timestep embedding. MVDream's camera MLP
  (Linear(16, d) - SiLU - Linear(d, d), output added to ``emb``) is exactly diffusers' ``class_embed_type =
  "projection"`` with ``projection_class_embeddings_input_dim = 16``: the camera goes in as ``class_labels``.
  The vector is the view's camera-to-world matrix, flattened row by row (:func:`camera_vectors`).
- **The views of one object attend to each other.** In every transformer block the self-attention (``attn1``)
  runs over the tokens of all ``num_views`` views of an object at once (MVDream's reshape of (B*V, L, C) to
  (B, V*L, C)); the text cross-attention and the feed-forward stay per view. No weight is added: a single-view
  UNet's ``attn1`` weights serve as they are (:class:`CrossViewAttnProcessor`).

A batch of such a prior is ordered view-major inside each object: rows ``[g*V, (g+1)*V)`` are the V views of
group g, and all rows of a group share one timestep. Every guidance batch of splatgen keeps that order (the CFG
batch is ``[null x B, view x B]`` with B a multiple of V, the losses' batches likewise).

Camera convention (the one MVDream's threestudio extension feeds the public checkpoint, and the one the bundled
camera-aware prior is trained with): world +Z up; azimuth measured from +X towards +Y, the object's front at
azimuth 0 (as in :mod:`splatgen.cameras`); the camera looks at the origin, its matrix columns are (right, up,
backward, position) in OpenGL's camera axes. ``normalise_distance`` scales the position to unit length (MVDream's
``normalize_camera``), which drops the distance; the bundled prior keeps it.

A model folder declares itself multi-view with ``multiview.json`` (:data:`SPEC_FILE`) beside ``unet/``::

    {"num_views": 4, "camera": "c2w16", "normalise_distance": false, "view_prompts": false,
     "elevation_range": [-10, 45]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..errors import ModelLoadError

#: the file in a model folder that makes it a multi-view prior
SPEC_FILE = "multiview.json"
#: camera vector formats a spec may name
CAMERA_FORMATS = ("c2w16",)


@dataclass(frozen=True)
class MultiViewSpec:
    """What a multi-view prior needs from the trainer.

    Attributes:
        num_views: views denoised jointly (an object's group; camera batches are multiples of it).
        camera: the camera vector's format (:data:`CAMERA_FORMATS`).
        normalise_distance: the camera position scaled to unit length (MVDream) or kept (world units).
        view_prompts: the model was trained with view words (", front view") beside its cameras.
        elevation_range: the elevations (degrees) the model was trained on; the trainer warns outside them.
        cross_view_mix: a gated prior's weight of the joint attention in each self-attention layer (processor name
            to w: the layer's output is ``(1 - w) * per-view + w * joint``); None: joint attention everywhere
            (MVDream). See :class:`CrossViewAttnProcessor`.
    """

    num_views: int = 4
    camera: str = "c2w16"
    normalise_distance: bool = False
    view_prompts: bool = False
    elevation_range: Tuple[float, float] = (-10.0, 45.0)
    cross_view_mix: Optional[Dict[str, float]] = None

    def __post_init__(self) -> None:
        if int(self.num_views) < 1:
            raise ModelLoadError(f"{SPEC_FILE}: num_views must be >= 1, got {self.num_views}")
        if self.camera not in CAMERA_FORMATS:
            raise ModelLoadError(f"{SPEC_FILE}: camera {self.camera!r} is not known; expected one of {list(CAMERA_FORMATS)}")
        for name, w in (self.cross_view_mix or {}).items():
            if not isinstance(w, (int, float)) or not -1.0 <= float(w) <= 1.0:
                raise ModelLoadError(f"{SPEC_FILE}: cross_view_mix[{name!r}] must be a number in [-1, 1], got {w!r}")

    @property
    def camera_dim(self) -> int:
        return 16

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["elevation_range"] = list(self.elevation_range)
        return d

    @staticmethod
    def from_json(data: Dict[str, Any], where: str = SPEC_FILE) -> "MultiViewSpec":
        known = {f for f in MultiViewSpec.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelLoadError(f"{where}: unknown keys {unknown}; expected some of {sorted(known)}")
        d = dict(data)
        if "elevation_range" in d:
            d["elevation_range"] = tuple(float(v) for v in d["elevation_range"])
        return MultiViewSpec(**d)

    @staticmethod
    def read(folder: Path) -> Optional["MultiViewSpec"]:
        """The spec of a model folder, or None when it has no :data:`SPEC_FILE` (a single-view prior)."""
        path = Path(folder) / SPEC_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path} must hold a JSON object, not {type(data).__name__}")
        return MultiViewSpec.from_json(data, str(path))

    def write(self, folder: Path) -> Path:
        path = Path(folder) / SPEC_FILE
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path


def views_error(batch_size: int, views: int) -> Optional[str]:
    """The one-line refusal of a batch of ``batch_size`` views for a prior that denoises ``views`` together, or None."""
    if views > 1 and batch_size % views:
        return (f"camera.batch_size={batch_size} must be a multiple of the prior's {views} views (it denoises {views} "
                f"views of the object together): use camera.batch_size={views} or {2 * views}")
    return None


def camera_vectors(elevation: Tensor, azimuth: Tensor, radius: Tensor, normalise_distance: bool = False) -> Tensor:
    """[N, 16] float32: each view's camera-to-world matrix (OpenGL camera axes, world +Z up) flattened row by row.

    Args:
        elevation, azimuth: [N] degrees (splatgen's conventions: azimuth 0 looks at the object's front).
        radius: [N] distance from the origin (ignored when ``normalise_distance``).

    Raises:
        ValueError: a camera angle is not finite (rows without a camera cannot condition a multi-view prior).
    """
    el = torch.as_tensor(elevation, dtype=torch.float64).reshape(-1)
    az = torch.as_tensor(azimuth, dtype=torch.float64).reshape(-1)
    r = torch.as_tensor(radius, dtype=torch.float64).reshape(-1).expand_as(el)
    if not (torch.isfinite(el).all() and torch.isfinite(az).all() and torch.isfinite(r).all()):
        raise ValueError("a multi-view prior needs every row's camera (elevation, azimuth, radius); some are unknown")
    e, a = torch.deg2rad(el), torch.deg2rad(az)
    back = torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()], dim=-1)  # from the origin to the camera
    pos = back if normalise_distance else back * r[:, None]
    up_world = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(back)
    right = torch.linalg.cross(-back, up_world)
    small = right.norm(dim=-1) < 1e-9  # straight above or below: any horizontal right vector
    if small.any():
        right[small] = torch.stack([-a[small].sin(), a[small].cos(), torch.zeros_like(a[small])], dim=-1)
    right = torch.nn.functional.normalize(right, dim=-1)
    up = torch.linalg.cross(back, right)
    m = torch.zeros(el.shape[0], 4, 4, dtype=torch.float64)
    m[:, :3, 0], m[:, :3, 1], m[:, :3, 2], m[:, :3, 3] = right, up, back, pos
    m[:, 3, 3] = 1.0
    return m.reshape(-1, 16).float()


class CrossViewAttnProcessor:
    """Self-attention over the tokens of all views of an object (MVDream's multi-view attention).

    Wraps diffusers' scaled-dot-product processor: for self-attention (no ``encoder_hidden_states``) the
    [G*V, L, C] hidden states become [G, V*L, C], attend, and go back; cross-attention is left to the wrapped
    processor unchanged. With ``num_views = 1`` it is the wrapped processor exactly.

    ``mix`` < 1 (a gated prior, :class:`GatedCrossViewAttnProcessor`) blends the layer's per-view and joint
    attention: ``per_view + mix * (joint - per_view)``; ``mix = 0`` is the single-view layer.
    """

    def __init__(self, num_views: int, mix: float = 1.0):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.num_views = int(num_views)
        self.mix = float(mix)
        self.inner = AttnProcessor2_0()

    def _joint(self, attn, hidden_states: Tensor, attention_mask, temb, **kwargs) -> Tensor:
        N, L, C = hidden_states.shape
        V = self.num_views
        if N % V:
            raise ValueError(f"a multi-view prior of {V} views got a batch of {N} rows (not a multiple of {V})")
        joint = hidden_states.reshape(N // V, V * L, C)
        return self.inner(attn, joint, None, attention_mask, temb, **kwargs).reshape(N, L, C)

    def blend(self, mix, attn, hidden_states: Tensor, encoder_hidden_states: Optional[Tensor] = None,
              attention_mask: Optional[Tensor] = None, temb: Optional[Tensor] = None, **kwargs) -> Tensor:
        """The layer with joint-attention weight ``mix``: a float (a served prior: 0 and 1 compute one attention),
        or a 0-d tensor (a gate being trained: both attentions, so the gradient reaches it)."""
        fixed = not isinstance(mix, Tensor)
        if encoder_hidden_states is not None or self.num_views == 1 or hidden_states.dim() != 3 or (fixed and mix == 0.0):
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        joint = self._joint(attn, hidden_states, attention_mask, temb, **kwargs)
        if fixed and mix == 1.0:
            return joint
        alone = self.inner(attn, hidden_states, None, attention_mask, temb, **kwargs)
        return alone + (mix if fixed else mix.to(alone.dtype)) * (joint - alone)

    def __call__(self, attn, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        return self.blend(self.mix, attn, hidden_states, *args, **kwargs)


class GatedCrossViewAttnProcessor(torch.nn.Module):
    """The trainable form of a gated cross-view layer: ``mix = tanh(gate)`` with ``gate`` a learnt scalar that
    starts at 0, so a single-view UNet given these layers starts as exactly itself and learns how much to look at
    the other views (a Flamingo-style zero-initialised gate; MVDream's ungated layers start at full joint attention,
    which moves a small prior far from its function before its camera input has learnt anything). The gate is a
    parameter of the UNet (``<layer>.processor.gate`` in its state dict); an exported prior keeps the mixes in
    :attr:`MultiViewSpec.cross_view_mix` and serves them with :class:`CrossViewAttnProcessor`."""

    def __init__(self, num_views: int):
        super().__init__()
        self.gate = torch.nn.Parameter(torch.zeros(()))
        self.fixed = CrossViewAttnProcessor(num_views)

    @property
    def mix(self) -> Tensor:
        return torch.tanh(self.gate)

    def forward(self, attn, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        return self.fixed.blend(self.mix, attn, hidden_states, *args, **kwargs)


#: the suffix of a gate's key in a UNet's state dict
GATE_SUFFIX = ".processor.gate"


def install_cross_view_attention(unet: torch.nn.Module, num_views: int, mix: Optional[Dict[str, float]] = None,
                                 gated: bool = False) -> int:
    """Make every transformer block's self-attention (``attn1``) of ``unet`` attend across ``num_views`` views;
    the other attention layers keep their processors. Returns how many layers changed.

    ``mix`` (a spec's :attr:`~MultiViewSpec.cross_view_mix`) gives each layer's weight of the joint attention
    (layers it does not name get 1); ``gated`` installs trainable gates starting at 0 instead
    (:class:`GatedCrossViewAttnProcessor`)."""
    procs = dict(unet.attn_processors)
    layers = [name for name in procs if name.endswith("attn1.processor")]
    unknown = sorted(set(mix or {}) - set(layers))
    if unknown:
        raise ModelLoadError(f"{SPEC_FILE}: cross_view_mix names layers this UNet does not have: {unknown[:3]}")
    for name in layers:
        procs[name] = GatedCrossViewAttnProcessor(num_views) if gated else CrossViewAttnProcessor(num_views, (mix or {}).get(name, 1.0))
    unet.set_attn_processor(procs)
    return len(layers)


def split_gates(state: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, float]]:
    """A gated UNet's state dict as (the plain UNet's state dict, each layer's mix ``tanh(gate)`` by processor
    name), the form an exported prior keeps (weights, :attr:`MultiViewSpec.cross_view_mix`)."""
    plain = {k: v for k, v in state.items() if not k.endswith(GATE_SUFFIX)}
    mix = {k[: -len(".gate")]: float(torch.tanh(v.float())) for k, v in state.items() if k.endswith(GATE_SUFFIX)}
    return plain, mix


def camera_unet_config(config: Dict[str, Any], camera_dim: int = 16) -> Dict[str, Any]:
    """A ``UNet2DConditionModel`` config with the camera input (``class_embed_type='projection'``)."""
    # diffusers' private keys ("_use_default_values" ...) would override the new values on from_config
    plain = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    return {**plain, "class_embed_type": "projection", "projection_class_embeddings_input_dim": int(camera_dim)}


def add_camera_input(unet: torch.nn.Module, camera_dim: int = 16, seed: int = 0) -> torch.nn.Module:
    """A camera-conditioned copy of a text-to-image ``unet``: the same weights, plus the camera MLP whose last layer
    starts at zero, so the new model starts as the old one (the way MVDream starts from Stable Diffusion)."""
    from diffusers import UNet2DConditionModel

    cfg = camera_unet_config(dict(unet.config), camera_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = UNet2DConditionModel.from_config(cfg)
    missing, unexpected = new.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("class_embedding.") for k in missing):
        raise ModelLoadError(f"add_camera_input: the UNet's weights do not fit (missing {missing[:4]}, unexpected {unexpected[:4]})")
    torch.nn.init.zeros_(new.class_embedding.linear_2.weight)
    torch.nn.init.zeros_(new.class_embedding.linear_2.bias)
    return new.to(next(unet.parameters()).dtype)


def uses_view_words(guidance: Any, view_dependent: bool) -> bool:
    """Whether the prompt gets view words (", front view") with this guidance: ``guidance.view_dependent``, unless
    the prior is a multi-view one trained without them (it reads the camera instead)."""
    spec = getattr(guidance, "multiview", None)
    return bool(view_dependent) and (spec is None or spec.view_prompts)


def share_within_groups(t: Tensor, num_views: int) -> Tensor:
    """Each group's first value for all its rows (one timestep per object: the views of a group are denoised
    together)."""
    t = t.reshape(-1)
    if num_views <= 1:
        return t
    if t.numel() % num_views:
        raise ValueError(f"{t.numel()} timesteps are not groups of {num_views} views")
    return t.view(-1, num_views)[:, :1].expand(-1, num_views).reshape(-1)


__all__ = [
    "CAMERA_FORMATS", "CrossViewAttnProcessor", "GATE_SUFFIX", "GatedCrossViewAttnProcessor", "MultiViewSpec",
    "SPEC_FILE", "add_camera_input", "camera_unet_config", "camera_vectors", "install_cross_view_attention",
    "share_within_groups", "split_gates", "uses_view_words",
]
