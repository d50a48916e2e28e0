"""The exact oracle prior of the procedural world, behind the same guidance interface as diffusers models.

For a prompt of the world, the data distribution is taken to be the finite, uniform set of the object's
ground-truth views ``y_1 .. y_V`` (pixels in [-1, 1], rendered by :func:`~splatgen.world.raycast.render_world`
over white at ``resolution``, cameras drawn by :func:`~splatgen.cameras.sample_orbit_cameras` with the
run's camera ranges and a fixed seed). Under the forward process ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``
the optimal (minimum-MSE) denoiser of that distribution is known in closed form::

    x0_hat(x_t) = sum_i softmax_i( -||x_t - sqrt(abar_t) y_i||^2 / (2 (1 - abar_t)) ) y_i
    eps_hat     = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)

computed here in float64 with ``||x||^2 - 2 sqrt(abar) x.y + abar ||y||^2`` (views held as a [V, 3*H*W]
matrix) and a max-subtracted softmax (log-sum-exp), so it is exact at every timestep.

Texts (``predict`` takes any rows of :class:`~splatgen.guidance.conditioning.Conditioning`; ``predict_noise``
returns classifier-free guidance's ``[uncond; cond]`` like a UNet):

- **cond**: the denoiser over the object's views of the same view direction (front / side / back /
  overhead) as the render, which is exactly what a perfectly trained view-dependent text-to-image model
  would compute for ``"<prompt>, <direction> view"``. With ``view_dependent=False`` every view of the
  object is used. A direction with no view (e.g. 'overhead' when the elevation range stays below it)
  falls back to all the object's views.
- **uncond**: the denoiser over a broader set standing for "any image of the world": all the object's
  views (every direction) plus ``reference_views`` views of one instance of every kind of the world (the
  same kind appears in another colour), drawn with a different seed. Classifier-free guidance
  ``uncond + s (cond - uncond)`` then pushes a render toward what distinguishes *this object from this
  direction* from other directions and other objects, which is the mechanism CFG provides in real models
  (including its anti-Janus effect). A world negative prompt replaces this set by that object's views.

Noise schedule: Stable Diffusion's ``scaled_linear`` schedule (betas from 0.00085 to 0.012, linear in
their square root, 1000 steps; abar = 0.98 at t = 20, 0.28 at t = 500, 0.0058 at t = 980). Our views are
pixels, for which DDPM's ``linear`` schedule (1e-4 to 0.02, abar = 6e-5 at t = 980) is the textbook
choice and is available (``beta_schedule="linear"``), but the point of the world is to measure the
pipeline as it runs with Stable Diffusion: with the same abar(t), every timestep schedule (TP-SDS's
constants were tuned on SD) sees the same signal-to-noise ratio at the same t. Measured (mug, default
config, 150 CPU steps): silhouette IoU 0.90 with ``scaled_linear`` vs 0.85 with ``linear``, whose TP-SDS
schedule stays at t > 680 (abar < 0.01) for the whole run.

What this prior behaves like: with D = 3 H W pixels, the softmax is nearly one-hot unless
``abar / (1 - abar)`` is below about ``1 / (typical squared distance between views)`` (about 1/2000 for
64x64 views): the target x0_hat is a blend of several views only at the largest t, and elsewhere it is
the view nearest to the noisy render, so the SDS gradient ``w(t) (eps_hat - eps)`` equals
``w(t) sqrt(abar / (1 - abar)) (x0 - x0_hat)`` (for ``guidance_scale = 1``), a reconstruction pull toward
that view.

Tuning measured on the CPU (held-out metrics of :mod:`~splatgen.world.metrics` at 64 px, 8 views; seeds 0-1
over a mug, chair, tree, house and snowman unless noted):

- Minimal loop (no densification; ``tests/test_world_oracle.py::sds_fit``): 1024 Gaussians in the radius-0.5
  ball, 32 px renders, 2 views/step, Adam lr means 3e-3, scales 5e-3, opacities 5e-2, sh0 5e-2, weighting
  'sds', t ~ U[500, 980], guidance scale 7.5, 64 oracle views + 8 reference views per kind. 300 steps
  (~6 s on one core): mean IoU 0.774 (mug 0.87, house 0.88, tree 0.84, chair 0.68, snowman 0.60),
  PSNR 12.8 dB, Janus 0.06. Changing one thing: t ~ U[200, 980] 0.749 (Janus 0.17); t ~ U[700, 980] 0.771;
  TP-SDS on [20, 980] 0.729 (Janus 0.13); scale 1: 0.746 (Janus 0.27), 3: 0.766 (0.19), 20: 0.736
  (0.04), 100: 0.691 (0.06); lr means 1e-3 / sh0 1e-2: 0.759; 4 views/step: about the same at 4x the
  cost. Thin parts (chair legs, the snowman's face) are what 32 px misses.
- The trainer (``configs/world.yaml``: TP-SDS, 4 views at 64 px, 2048 Gaussians, densification), 300
  steps (~35 s each on the CPU), mug / chair / snowman, seeds 0-1: guidance scale 3: IoU 0.80, PSNR 14.0 dB,
  Janus 0.11 (the snowman's back copies its face in both seeds); 7.5: IoU 0.78, PSNR 15.4 dB, Janus 0.06;
  7.5 with t ~ U[500, 980]: IoU 0.80, PSNR 15.8 dB, Janus 0.00; 20 (seed 0): IoU 0.70, PSNR 16.4 dB,
  Janus 0.00. The scale trades silhouette for colour and for the back not copying the front: the
  unconditional set holds the object's other directions, so CFG pushes each view away from them.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import DIRECTIONS, Cameras, sample_orbit_cameras
from ..config import CameraConfig, Config
from ..errors import PromptError, short
from ..guidance.base import Guidance
from ..guidance.conditioning import TEXT_KEYS, Conditioning, directions_conditioning
from ..sds import posterior_mean
from .grammar import COLOURS, KINDS, WorldObject, is_world_prompt, make_object, parse_prompt, vocabulary
from .raycast import render_world

#: seed of the cameras of the oracle's views (the metrics' held-out cameras use other ones).
VIEW_SEED = 20240611
#: seed of the reference set's objects and cameras.
REFERENCE_SEED = 777


def ddpm_alphas_cumprod(num_steps: int = 1000, beta_schedule: str = "scaled_linear") -> Tensor:
    """[T] cumulative products of ``1 - beta_t`` (float64) for diffusers' ``linear`` or ``scaled_linear``."""
    if beta_schedule == "linear":
        betas = torch.linspace(1e-4, 0.02, num_steps, dtype=torch.float64)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_steps, dtype=torch.float64) ** 2
    else:
        raise ValueError(f"beta_schedule={beta_schedule!r}; choose 'linear' or 'scaled_linear'")
    return torch.cumprod(1.0 - betas, dim=0)


class WorldGuidance(Guidance):
    """Exact oracle prior of one procedural-world prompt (pixel space, no weights).

    Construct, then call :meth:`prepare_text` with the prompt (which renders the views). Attributes after
    ``prepare_text``: ``object`` (the :class:`WorldObject`), ``views`` [V, 3*H*W] float64 in [-1, 1],
    ``view_cameras``, ``view_directions``, ``reference_views`` [R, 3*H*W].
    """

    #: the trainer renders on this background for this guidance (the views are composited over white).
    required_background = "white"

    def __init__(
        self,
        num_views: int = 256,
        resolution: int = 64,
        camera: Optional[CameraConfig] = None,
        device: torch.device | str = "cpu",
        beta_schedule: str = "scaled_linear",
        reference_views: int = 8,
        supersample: int = 2,
        view_seed: int = VIEW_SEED,
        object_seed: Optional[int] = None,
    ):
        """
        Args:
            num_views: V, the object's ground-truth views that define the denoiser.
            resolution: side of the views and of the model input (``input_size``).
            camera: ranges of the view cameras (defaults of :class:`CameraConfig` when None).
            device: where views and predictions live.
            beta_schedule: ``'scaled_linear'`` (Stable Diffusion's, default) or ``'linear'`` (DDPM's).
            reference_views: views per kind in the unconditional reference set (0: the unconditional set is
                only the object's views of all directions).
            supersample: anti-aliasing of the views (``s x s`` rays per pixel).
            view_seed: seed of the view cameras.
            object_seed: the object's variation seed (None: derived from the caption).
        """
        if num_views < 1 or resolution < 1:
            raise ValueError(f"num_views and resolution must be >= 1, got {num_views}, {resolution}")
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.num_views = int(num_views)
        self.resolution = int(resolution)
        self.input_size = int(resolution)
        self.camera = camera if camera is not None else CameraConfig()
        self.beta_schedule = beta_schedule
        self.num_train_timesteps = 1000
        self._abar64 = ddpm_alphas_cumprod(self.num_train_timesteps, beta_schedule).to(self.device)
        self.alphas_cumprod = self._abar64.float()
        self.reference_views_per_kind = int(reference_views)
        self.supersample = int(supersample)
        self.view_seed = int(view_seed)
        self.object_seed = object_seed
        self.text_ready = False
        self.object: Optional[WorldObject] = None
        self.view_dependent = True

    @classmethod
    def from_config(cls, cfg: Config, device: torch.device | str = "cpu") -> "WorldGuidance":
        """Build from a run's whole :class:`Config`: the views from its ``guidance`` section, their cameras from
        its ``camera`` section (the ranges the run's renders are drawn from). The oracle computes in float64
        and returns float32, whatever ``guidance.dtype`` says."""
        g = cfg.guidance
        return cls(num_views=g.world_views, resolution=g.world_resolution, camera=cfg.camera, device=device)

    # ------------------------------------------------------------------ views
    def _cameras(self, n: int, seed: int) -> Cameras:
        c = self.camera
        return sample_orbit_cameras(
            n, self.resolution, torch.Generator().manual_seed(seed), c.elevation_range, c.azimuth_range,
            c.radius_range, c.fovy_range, front_half_angle=c.front_half_angle,
            overhead_elevation=c.overhead_elevation, device=self.device,
        )

    def _render(self, obj: WorldObject | Sequence[WorldObject], cams: Cameras) -> Tensor:
        rgb = render_world(obj, cams, background=(1.0, 1.0, 1.0), supersample=self.supersample)["rgb"]
        return (rgb.permute(0, 3, 1, 2).reshape(len(cams), -1).to(torch.float64) * 2.0 - 1.0)

    def _reference_set(self, exclude: WorldObject) -> Tensor:
        n = self.reference_views_per_kind
        if n <= 0:
            return torch.zeros(0, self.views.shape[1], dtype=torch.float64, device=self.device)
        objs: List[WorldObject] = []
        for i, kind in enumerate(sorted(KINDS)):
            o = make_object(kind, None, seed=REFERENCE_SEED + i)
            if kind == exclude.kind and o.colour == exclude.colour:
                other = [c for c in COLOURS if c not in (exclude.colour, "white")]
                o = make_object(kind, other[i % len(other)], seed=REFERENCE_SEED + i)
            objs.append(o)
        # The sampler spreads consecutive cameras around the circle, so deal them out round-robin: every
        # reference object is seen from all around.
        cams = self._cameras(n * len(objs), REFERENCE_SEED)
        per_view = [objs[j % len(objs)] for j in range(n * len(objs))]
        return self._render(per_view, cams)

    # ------------------------------------------------------------------ Guidance interface
    def prepare_text(self, prompt: str, negative_prompt: str = "", view_dependent: bool = True) -> None:
        """Parse ``prompt`` into its object (PromptError if outside the world) and render its views."""
        obj = parse_prompt(prompt, self.object_seed)
        self.object = obj
        self.view_dependent = bool(view_dependent)
        cams = self._cameras(self.num_views, self.view_seed)
        self.view_cameras = cams
        self.view_directions = list(cams.directions)
        self.views = self._render(obj, cams)  # [V, D] float64
        V = self.num_views
        dirs = self.view_directions
        sets: Dict[str, Tensor] = {"prompt": torch.ones(V, dtype=torch.bool, device=self.device)}
        for d in DIRECTIONS:
            m = torch.tensor([x == d for x in dirs], dtype=torch.bool, device=self.device)
            if not view_dependent or not bool(m.any()):
                m = torch.ones(V, dtype=torch.bool, device=self.device)
            sets[d] = m
        self.reference_views = self._reference_set(obj)
        parts = [self.views, self.reference_views]
        R = self.reference_views.shape[0]
        own = torch.zeros(R, dtype=torch.bool, device=self.device)
        members = {k: torch.cat([m, own]) for k, m in sets.items()}
        members["uncond"] = torch.ones(V + R, dtype=torch.bool, device=self.device)
        if negative_prompt.strip():
            if not is_world_prompt(negative_prompt):
                raise PromptError(
                    f"negative prompt {short(negative_prompt)} is not an object of the procedural world; the world "
                    f"prior needs an empty negative prompt or a world prompt; {vocabulary()}"
                )
            neg = parse_prompt(negative_prompt)
            self.negative_views = self._render(neg, self._cameras(self.num_views, self.view_seed + 1))
            parts.append(self.negative_views)
            Vn = self.negative_views.shape[0]
            pad = torch.zeros(Vn, dtype=torch.bool, device=self.device)
            members = {k: torch.cat([m, pad]) for k, m in members.items()}
            members["negative"] = torch.cat([torch.zeros(V + R, dtype=torch.bool, device=self.device), ~pad])
        else:
            self.negative_views = None
            members["negative"] = members["uncond"]
        # One matrix for every text: the object's views, the reference views (and the negative prompt's views).
        self._all = torch.cat(parts, dim=0)
        # [K, V_all]: each text's distribution over the views, uniform over its set.
        M = torch.stack([members[k].to(torch.float64) for k in TEXT_KEYS])
        self._membership = M / M.sum(-1, keepdim=True)
        self.text_ready = True

    def encode(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, 3, res, res] in [-1, 1] (antialiased bilinear resize if needed)."""
        x = images.float()
        if x.shape[-2:] != (self.resolution, self.resolution):
            size = (self.resolution, self.resolution)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x * 2.0 - 1.0

    def log_prior(self, cond: Conditioning) -> Tensor:
        """[N, V_all] log prior mass of every view under each row's text mix (-inf where none)."""
        p = cond.weights.to(self.device, torch.float64) @ self._membership
        return torch.where(p > 0, p.log(), torch.full_like(p, float("-inf")))

    def denoise_rows(self, x_t: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """The exact x0 prediction [N, 3, H, W] float64 of each row."""
        assert self.text_ready, "call prepare_text(prompt) first"
        N = x_t.shape[0]
        if len(cond) != N:
            raise ValueError(f"got {len(cond)} rows of conditioning for a batch of {N}")
        t = t.to(self.device).reshape(-1).long()
        t = t.expand(N) if t.numel() == 1 else t
        x = x_t.reshape(N, -1).to(self.device)
        return posterior_mean(x, self._abar64[t], self._all, log_prior=self.log_prior(cond)).reshape(x_t.shape)

    def denoise(self, x_t: Tensor, t: Tensor, directions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """The exact x0 predictions ``(uncond, cond)`` of classifier-free guidance's two halves, each [B, 3, H, W]
        float64."""
        B = x_t.shape[0]
        if len(directions) != B:
            raise ValueError(f"got {len(directions)} directions for a batch of {B}")
        cond = directions_conditioning(directions)
        t = t.reshape(-1)
        t = t.expand(B) if t.numel() == 1 else t
        x0 = self.denoise_rows(torch.cat([x_t, x_t]), torch.cat([t, t]), cond)
        return x0[:B], x0[B:]

    def predict(self, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """[N, 3, H, W] noisy pixels, [N] timesteps, N rows of conditioning -> [N, 3, H, W] exact eps (float32
        for float32 inputs)."""
        x0 = self.denoise_rows(x, t, cond)
        tt = t.to(self.device).reshape(-1).long()
        abar = self._abar64[tt.expand(x.shape[0]) if tt.numel() == 1 else tt].view(-1, 1, 1, 1)
        xx = x.to(self.device, torch.float64)
        eps = (xx - abar.sqrt() * x0) / (1.0 - abar).sqrt()
        return eps.to(x.dtype if x.dtype.is_floating_point else torch.float32)

    def release(self) -> None:
        """Drop the views (a later ``prepare_text`` renders them again)."""
        for name in ("views", "reference_views", "negative_views", "_all", "_membership"):
            if hasattr(self, name):
                delattr(self, name)
        self.text_ready = False

    def describe(self) -> Dict[str, object]:
        counts = {d: sum(1 for x in getattr(self, "view_directions", []) if x == d) for d in DIRECTIONS}
        return {
            "type": type(self).__name__,
            "caption": self.object.caption if self.object else None,
            "kind": self.object.kind if self.object else None,
            "seed": self.object.seed if self.object else None,
            "views": self.num_views,
            "views_per_direction": counts,
            "reference_views": int(self.reference_views.shape[0]) if self.text_ready else 0,
            "resolution": self.resolution,
            "beta_schedule": self.beta_schedule,
            "view_dependent": self.view_dependent,
        }
