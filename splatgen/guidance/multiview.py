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


#: the most attention scores (queries x keys, summed over the (object, head) pairs) one chunk of the explicit form
#: (:func:`_probs_attention`) holds: 2**20 are 2 MiB in bf16, as much again for the probabilities. Measured on the
#: bundled prior's 11 self-attention layers alone (64 px, 2 objects x 4 views, bf16, 2 threads): 2**20 about 58-70
#: ms, 2**19 60-75, 2**18 (more, smaller calls) and 2**21 or more (larger tensors: new memory paged in each call)
#: 76-91, the two-pass reference 81-89. The chunks bound the memory at any size, so no layer is too large for this
#: form: an MVDream-sized one at 256 px (32x32 latents: 4 views x 1024 tokens, 5 heads of 64, 2 objects; 168M
#: scores, 670 MiB in bf16 were they one tensor) holds 4M scores at a time (a query row has 4096 keys: 256 rows a
#: chunk) and took 266 ms against the SDPA pair's 385 (mix 0.47; joint only, 244 against 302).
_PROBS_CHUNK = 1 << 20


def _explicit_attention(x: Tensor) -> bool:
    """Whether self-attention on ``x``'s device and dtype runs as explicit ``bmm`` + ``softmax`` + ``bmm``
    (:func:`_probs_attention`) rather than ``scaled_dot_product_attention`` (:func:`_sdpa_attention`). Measured
    on 2 threads of an AMD EPYC with avx512_bf16, q, k, v of [8, 1024, 32] ((object, head) pairs, tokens, width):
    in bf16 the explicit form about 7 ms, SDPA's CPU flash kernel 8.5; in fp32 the explicit form 12-33 ms (a 32 MiB
    score tensor, paged in anew each call), SDPA 7.8. On CUDA SDPA (FlashAttention, cuDNN) keeps no score tensor
    at all. So: bf16 on the CPU only."""
    return x.device.type == "cpu" and x.dtype == torch.bfloat16


def _heads(x: Tensor, rows: int, heads: int) -> Tensor:
    """[N, L, heads * d] (the rows' tokens after a projection) as [rows, heads, N * L / rows, d] (a view of a
    contiguous ``x``)."""
    return x.reshape(rows, -1, heads, x.shape[-1] // heads).transpose(1, 2)


def _merge_heads(x: Tensor, shape: Tuple[int, int]) -> Tensor:
    """[rows, heads, tokens, d] back to [N, L, heads * d] (``shape`` = (N, L))."""
    return x.transpose(1, 2).reshape(*shape, -1)


def _sdpa_attention(q: Tensor, k: Tensor, v: Tensor, views: int, heads: int, mix) -> Tensor:
    """``alone + mix * (joint - alone)`` for projected tokens ``q, k, v`` [N, L, heads * d] (N = G * views rows,
    view-major within each group): ``joint`` attends over the V * L tokens of a group, ``alone`` over a row's L,
    each one scaled_dot_product_attention call on views of the same projections. Blends only: a fixed ``mix`` of 0
    or 1 (one attention) takes the wrapped processor instead (:meth:`CrossViewAttnProcessor.blend`)."""
    N, L, _ = q.shape

    def attend(rows: int) -> Tensor:
        out = torch.nn.functional.scaled_dot_product_attention(*(_heads(t, rows, heads) for t in (q, k, v)))
        return _merge_heads(out, (N, L))

    alone = attend(N)
    return torch.lerp(alone, attend(N // views), mix.to(alone.dtype) if isinstance(mix, Tensor) else mix)


def _probs_attention(q: Tensor, k: Tensor, v: Tensor, views: int, heads: int, mix, chunk: int = 0) -> Tensor:
    """The same as :func:`_sdpa_attention` from one score matrix: over a group's V * L tokens,
    ``S = Q K^T / sqrt(d)``, the joint probabilities ``P = softmax(S)`` row by row, each view's own
    ``P_v = softmax(S_vv)`` over the diagonal V-block of S (its queries against its own keys), and::

        out = (mix * P + (1 - mix) * blockdiag(P_1 .. P_V)) @ Vals = mix * (P @ Vals) + (1 - mix) * (P_v @ Vals_v)

    (the right-hand form is what runs: one ``baddbmm`` adds the joint product to the per-view one). ``mix`` 1
    skips the per-view softmax, 0 computes the diagonal blocks alone; a 0-d tensor ``mix`` keeps both products
    apart (``torch.lerp``) so the gradient reaches it.

    The rows of S go in chunks of one view's queries (their diagonal block is then a slice of the chunk's columns):
    as many (group, head) pairs, or as many of the view's query rows, as keep a chunk's scores within ``chunk``
    (:data:`_PROBS_CHUNK` when 0). One large score tensor is new memory each call, paged in again (a [8, 1024,
    1024] bf16 softmax took 5.9 ms inside the UNet that way, 2.7 ms on its own) and out of the cache between the
    product, the softmax and the next product; small chunks cost only a few more calls."""
    N, L, _ = q.shape
    fixed = not isinstance(mix, Tensor)
    G, V, H = N // views, views, heads
    d = q.shape[-1] // H
    B = G * H
    # [G * H, V, L, d]: (group, head) pairs, then a group's tokens view-major as in the rows
    qh, kh, vh = (_heads(t, G, H).reshape(B, V, L, d) for t in (q, k, v))
    k_all, v_all = kh.view(B, V * L, d), vh.view(B, V * L, d)
    scale = d ** -0.5
    zero = q.new_zeros(())  # baddbmm's ignored input (beta = 0): the scale is applied in the product's accumulator
    pure_view, pure_joint = fixed and mix == 0.0, fixed and mix == 1.0
    rows_per_chunk = max(1, (chunk or _PROBS_CHUNK) // (L if pure_view else V * L))
    step_b, step_r = (rows_per_chunk // L, L) if rows_per_chunk >= L else (1, rows_per_chunk)
    out = q.new_empty(B, V, L, d)
    for view in range(V):
        cols = slice(view * L, (view + 1) * L)
        for b in range(0, B, step_b):
            bs = slice(b, b + step_b)
            keys, vals = (kh[bs, view], vh[bs, view]) if pure_view else (k_all[bs], v_all[bs])
            for r in range(0, L, step_r):
                rs = slice(r, r + step_r)
                s = torch.baddbmm(zero, qh[bs, view, rs], keys.transpose(1, 2), beta=0.0, alpha=scale)
                p = torch.softmax(s, -1)
                if pure_view or pure_joint:
                    out[bs, view, rs] = torch.bmm(p, vals)
                    continue
                alone = torch.bmm(torch.softmax(s[:, :, cols], -1), vh[bs, view])
                if fixed:
                    out[bs, view, rs] = torch.baddbmm(alone, p, vals, beta=1.0 - mix, alpha=mix)
                else:
                    out[bs, view, rs] = torch.lerp(alone, torch.bmm(p, vals), mix.to(alone.dtype))
    return _merge_heads(out.view(G, H, V * L, d), (N, L))


def _one_pass_exact(attn, attention_mask, kwargs) -> bool:
    """Whether ``attn``'s self-attention is the plain case the one-pass form computes as diffusers'
    ``AttnProcessor2_0`` would: no attention mask or extra arguments, none of the norms around the attention
    (``spatial_norm``, ``group_norm``, ``norm_cross`` - which acts on encoder states only, but a layer configured
    with it keeps the reference path -, ``norm_q``, ``norm_k``), no residual connection or output rescaling, and no
    active dropout (two passes would draw two masks, one pass one)."""
    dropping = attn.training and any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in attn.to_out)
    return (attention_mask is None and not kwargs and getattr(attn, "spatial_norm", None) is None
            and getattr(attn, "group_norm", None) is None and not getattr(attn, "norm_cross", None)
            and getattr(attn, "norm_q", None) is None and getattr(attn, "norm_k", None) is None
            and not getattr(attn, "residual_connection", False) and getattr(attn, "rescale_output_factor", 1.0) == 1.0
            and not dropping)


class CrossViewAttnProcessor:
    """Self-attention over the tokens of all views of an object (MVDream's multi-view attention).

    Wraps diffusers' scaled-dot-product processor: for self-attention (no ``encoder_hidden_states``) the
    [G*V, L, C] hidden states become [G, V*L, C], attend, and go back; cross-attention is left to the wrapped
    processor unchanged. With ``num_views = 1`` it is the wrapped processor exactly.

    ``mix`` < 1 (a gated prior, :class:`GatedCrossViewAttnProcessor`) blends the layer's per-view and joint
    attention: ``per_view + mix * (joint - per_view)``; ``mix = 0`` is the single-view layer. Both attentions share
    the layer's projections and its output projection (affine, so blending before it equals blending after):
    the tokens are projected once, attend both ways (:func:`_probs_attention` from one score matrix on the CPU in
    bf16, :func:`_sdpa_attention` elsewhere), and the blend goes through ``to_out`` once. ``two_pass`` (or a layer
    that is not the plain case, :func:`_one_pass_exact`) takes the reference path instead: the wrapped processor
    once for the joint and once for the per-view attention, blended after.
    """

    #: the reference path: each attention through the wrapped processor (its own projections), blended after
    two_pass = False

    def __init__(self, num_views: int, mix: float = 1.0):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.num_views = int(num_views)
        self.mix = float(mix)
        self.inner = AttnProcessor2_0()

    def _groups(self, rows: int) -> int:
        V = self.num_views
        if rows % V:
            raise ValueError(f"a multi-view prior of {V} views got a batch of {rows} rows (not a multiple of {V})")
        return rows // V

    def _joint(self, attn, hidden_states: Tensor, attention_mask, temb, **kwargs) -> Tensor:
        N, L, C = hidden_states.shape
        joint = hidden_states.reshape(self._groups(N), self.num_views * L, C)
        return self.inner(attn, joint, None, attention_mask, temb, **kwargs).reshape(N, L, C)

    def _two_pass(self, mix, attn, hidden_states: Tensor, attention_mask, temb, **kwargs) -> Tensor:
        """The reference form: ``alone + mix * (joint - alone)`` of the wrapped processor's two outputs."""
        fixed = not isinstance(mix, Tensor)
        if fixed and mix == 0.0:
            return self.inner(attn, hidden_states, None, attention_mask, temb, **kwargs)
        joint = self._joint(attn, hidden_states, attention_mask, temb, **kwargs)
        if fixed and mix == 1.0:
            return joint
        alone = self.inner(attn, hidden_states, None, attention_mask, temb, **kwargs)
        return alone + (mix if fixed else mix.to(alone.dtype)) * (joint - alone)

    def _one_pass(self, mix, attn, hidden_states: Tensor) -> Tensor:
        """``to_out(alone + mix * (joint - alone))`` with q, k, v projected once (the plain case only)."""
        self._groups(hidden_states.shape[0])
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        attend = _probs_attention if _explicit_attention(q) else _sdpa_attention
        out = attend(q, k, v, self.num_views, attn.heads, mix)
        return attn.to_out[1](attn.to_out[0](out.to(q.dtype)))

    def blend(self, mix, attn, hidden_states: Tensor, encoder_hidden_states: Optional[Tensor] = None,
              attention_mask: Optional[Tensor] = None, temb: Optional[Tensor] = None, **kwargs) -> Tensor:
        """The layer with joint-attention weight ``mix``: a float (a served prior: 0 and 1 compute one attention),
        or a 0-d tensor (a gate being trained: both attentions, so the gradient reaches it)."""
        fixed = not isinstance(mix, Tensor)
        if encoder_hidden_states is not None or self.num_views == 1 or hidden_states.dim() != 3:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        # One attention (mix 0 or 1) through SDPA is the wrapped processor's own call: the one-pass form would
        # share nothing. It serves the blends, and on the CPU in bf16 a single attention too (its explicit form).
        single_sdpa = fixed and mix in (0.0, 1.0) and not _explicit_attention(hidden_states)
        if self.two_pass or single_sdpa or not _one_pass_exact(attn, attention_mask, kwargs):
            return self._two_pass(mix, attn, hidden_states, attention_mask, temb, **kwargs)
        return self._one_pass(mix, attn, hidden_states)

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
