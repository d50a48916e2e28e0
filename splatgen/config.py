"""Typed run configuration.

Every knob of a run is a field of one of the keyword-only dataclasses below, with a docstring right under
it. Configs are loaded through OmegaConf: the dataclass defaults, then any number of YAML files, then
``a.b=c`` overrides. Unknown keys and values of the wrong type are refused with a :class:`ConfigError`
that names the key; value checks that OmegaConf cannot express (ranges, choices) live in ``validate``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError
from .resources import bundled_config_text, config_names


def _choice(section: str, name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{section}.{name}={value!r} is not allowed; choose one of {list(allowed)}")


def _positive(section: str, name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{section}.{name}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


# The extension points: the values each setting allows are the keys of the table that dispatches on it (a test
# pins each pair), so adding one is an entry there and a name here.
#: ``model.type``: :data:`splatgen.representation.kinds.REPRESENTATIONS`
MODEL_TYPES = ("gaussians", "nerf")
#: ``guidance.type``: :data:`splatgen.components.GUIDANCE_BUILDERS`
GUIDANCE_TYPES = ("world", "stable-diffusion", "pixel")
#: ``guidance.weighting``: :data:`splatgen.sds.WEIGHTINGS`
WEIGHTING_NAMES = ("sds", "uniform", "snr", "dreamtime")
#: ``schedule.timestep``: :data:`splatgen.schedules.TIMESTEP_SCHEDULES`
TIMESTEP_SCHEDULE_NAMES = ("tp-sds", "uniform", "linear", "step")
#: the score-distillation losses ``guidance.loss`` allows; :data:`splatgen.guidance.losses.LOSSES` implements
#: them (a test pins the two together).
LOSS_NAMES = ("sds", "csd", "nfsd", "ism", "vsd")
#: the estimators of VSD's render distribution (``guidance.vsd_estimator``; :data:`splatgen.guidance.losses.VSD_ESTIMATORS`)
VSD_ESTIMATOR_NAMES = ("auto", "lora", "renders")

#: the largest image side any setting may ask for (renders, previews, views).
MAX_SIDE = 4096
#: the most Gaussians any setting may ask for (gsplat's largest published scenes hold a few million).
MAX_GAUSSIANS = 20_000_000


def _at_most(section: str, name: str, value: float, limit: float) -> None:
    if value > limit:
        raise ConfigError(f"{section}.{name}={value!r} is too large; it must be <= {limit}")


def _milestones(section: str, name: str, milestones: Sequence[Sequence[Any]], what: str,
                value_ok: Callable[[float], bool], allowed: str) -> List[List[float]]:
    """``[[fraction, value], ...]`` with fractions in [0, 1], increasing, and values ``value_ok`` accepts; returns
    them as floats (the fields are typed ``List[List[Any]]``: OmegaConf 2.3, which ``pyproject.toml`` allows and
    hydra-core 1.3 pins, refuses an int such as ``256`` inside a ``List[List[float]]``)."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    out: List[List[float]] = []
    for m in milestones:
        if (not isinstance(m, (list, tuple)) or len(m) != 2 or not all(number(v) for v in m)
                or not 0.0 <= m[0] <= 1.0 or not value_ok(m[1]) or (out and m[0] < out[-1][0])):
            raise ConfigError(f"{section}.{name} must be [[fraction, {what}], ...] with increasing fractions in "
                              f"[0, 1] and {allowed}; got {milestones!r}")
        out.append([float(m[0]), float(m[1])])
    return out


def _finite_everywhere(obj: Any, prefix: str) -> None:
    """Every float of a config section (and of its lists) must be finite: NaN and Inf pass every comparison
    check (nan > 0 is False, so is nan < 0) and would otherwise reach the optimiser."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, (list, tuple)):
                stack.extend(v)
            elif isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{prefix}.{f.name}={value!r} is not a finite number")


def _range(section: str, name: str, value: Sequence[float], lo: float = -float("inf"), hi: float = float("inf")) -> None:
    if len(value) != 2 or not (lo <= value[0] <= value[1] <= hi):
        raise ConfigError(f"{section}.{name}={list(value)!r} must be [low, high] with {lo} <= low <= high <= {hi}")


@dataclass(kw_only=True)
class RunConfig:
    seed: int = 0
    """Seed for every random draw of the run (initialisation, cameras, timesteps, noise)."""
    steps: int = 300
    """Number of optimisation steps."""
    device: str = "auto"
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    checkpoint_every: int = 0
    """Also save checkpoints/step_NNNNNN.pt every this many steps, and keep them (0: off)."""
    checkpoint_minutes: float = 5.0
    """Save checkpoints/resume.pt (replacing the previous one) when this many minutes of training passed since the
    last checkpoint, so a long run that is killed can continue with --resume (0: off). Short runs never reach it."""
    log_every: int = 10
    """Write scalars to metrics.jsonl every this many steps."""
    preview_views: int = 4
    """Number of views (evenly spread azimuths) rendered to previews.png at the end."""
    preview_resolution: int = 256
    """Side in pixels of each preview view."""
    progress: str = "auto"
    """Progress: 'auto' (a bar when stderr is a terminal, else a log line every tenth of the steps or 30 s),
    'on' (always the bar) or 'off'."""
    tensorboard: bool = False
    """Also log scalars to TensorBoard (needs the tensorboard package)."""
    wandb: bool = False
    """Also log the scalars of metrics.jsonl, the resolved config and the run folder's name to Weights & Biases
    (pip install 'splatgen[wandb]'; `wandb login` first, or WANDB_MODE=offline to keep the run in local files;
    wandb writes under WANDB_DIR, default ./wandb, never in the run folder)."""
    wandb_project: str = "splatgen"
    """The W&B project the run is logged to (run.wandb)."""
    wandb_entity: str = ""
    """The W&B team or user that owns the project; '' is your default entity (run.wandb)."""
    wandb_name: str = ""
    """The W&B run's name; '' names it after the run folder (run.wandb)."""
    evaluate: bool = True
    """At the end, evaluate against ground truth when the prompt belongs to the procedural world."""
    cudnn_benchmark: bool = True
    """On CUDA, let cuDNN time its convolution algorithms once per input shape and keep the fastest (the VAE's
    convolutions run at a few fixed shapes)."""
    cpu_keep_freed_memory: bool = True
    """On the CPU, let the C library (glibc) keep freed blocks of up to 32 MiB for reuse rather than unmap them, so
    each step does not fault its tensors in anew (``splatgen.devices.keep_freed_cpu_memory``: process-wide, and once
    on it stays on in that process)."""
    eval_every: int = 0
    """Also evaluate against ground truth every this many steps (procedural-world prompts only; the time spent
    evaluating is excluded from the run's training seconds); the curve goes to metrics.jsonl (0: off)."""
    video: bool = False
    """At the end, write turntable.mp4 in the run folder: one turn around the object starting at its front, 120
    frames at 30 fps, H.264 (needs imageio-ffmpeg); 512 px on CUDA, 256 px on CPU (6 s on an idle 2-core CPU for
    a few thousand Gaussians; a NeRF takes seconds per frame there). `splatgen export RUN out.mp4` makes one later."""
    viewer: bool = False
    """Serve a live view of the Gaussians while they optimise at http://127.0.0.1:<run.viewer_port> (viser; open
    it in a browser, through an SSH tunnel from another machine). It updates at most once a second and never
    takes more than 2% of the run's time; off, it costs nothing."""
    viewer_port: int = 8080
    """Port of the live view (run.viewer); the next free one when it is taken."""

    def validate(self) -> None:
        _positive("run", "steps", self.steps)
        _positive("run", "checkpoint_every", self.checkpoint_every, allow_zero=True)
        _positive("run", "log_every", self.log_every)
        _positive("run", "preview_views", self.preview_views, allow_zero=True)
        _positive("run", "preview_resolution", self.preview_resolution)
        _positive("run", "eval_every", self.eval_every, allow_zero=True)
        if not 0 <= self.viewer_port <= 65535:
            raise ConfigError(f"run.viewer_port={self.viewer_port} must be in [0, 65535] (0: any free port)")
        # YAML reads a bare on/off (or yes/no, true/false) as a boolean, which OmegaConf then stores as the
        # string 'True'/'False' in this str field: take those for what the user typed.
        self.progress = {"true": "on", "false": "off"}.get(str(self.progress).lower(), self.progress)
        _choice("run", "progress", self.progress, ["auto", "on", "off"])
        _positive("run", "checkpoint_minutes", self.checkpoint_minutes, allow_zero=True)
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ConfigError(f"run.device={self.device!r} is not allowed; use 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index)")
        _at_most("run", "steps", self.steps, 10_000_000)
        _at_most("run", "preview_views", self.preview_views, 64)
        _at_most("run", "preview_resolution", self.preview_resolution, MAX_SIDE)


@dataclass(kw_only=True)
class ModelConfig:
    type: str = "gaussians"
    """The 3D representation: 'gaussians' (3D Gaussian splatting, the default) or 'nerf' (the DreamFusion-style
    NeRF baseline of :mod:`splatgen.nerf`, configured by the ``nerf`` section; the Gaussian keys below and the
    ``densify`` section are then unused)."""
    num_points: int = 2048
    """Number of Gaussians at initialisation."""
    init_radius: float = 0.5
    """Radius of the ball (world units) the initial means are drawn uniformly from."""
    init_scale: float = 0.03
    """Initial isotropic scale (world units, not log) of every Gaussian."""
    init_opacity: float = 0.1
    """Initial opacity in (0, 1)."""
    init_color: str = "random"
    """'random' colours or 'grey'."""
    sh_degree: int = 0
    """Largest spherical-harmonics degree the model holds (0 to 3)."""
    sh_degree_milestones: List[float] = field(default_factory=list)
    """Fractions of the run at which the active SH degree grows by one (e.g. [0.5] with sh_degree=1)."""
    alpha_entropy: float = 0.0
    """Weight of a binary-entropy loss on each rendered pixel's opacity, summed over the pixels like the SDS
    gradient: it pushes every pixel towards empty or opaque, against the half-transparent halo SDS leaves around
    an object (the binary entropy stable-dreamfusion and threestudio put on a NeRF's opacity, here on the Gaussians'
    render; 0: off). On the bundled prior it lowers IoU (benchmarks/results/multiview/README.md)."""
    alpha_entropy_ramp: float = 0.5
    """Fraction of the run over which alpha_entropy's weight rises linearly from 0 (early renders are mostly
    empty, and a full weight from the first step would empty them for good)."""

    def validate(self) -> None:
        _choice("model", "type", self.type, MODEL_TYPES)
        _positive("model", "num_points", self.num_points)
        _at_most("model", "num_points", self.num_points, MAX_GAUSSIANS)
        _positive("model", "init_radius", self.init_radius)
        _positive("model", "init_scale", self.init_scale)
        if not 0.0 < self.init_opacity < 1.0:
            raise ConfigError(f"model.init_opacity={self.init_opacity!r} must be in (0, 1)")
        _choice("model", "init_color", self.init_color, ["random", "grey"])
        _choice("model", "sh_degree", self.sh_degree, [0, 1, 2, 3])
        _positive("model", "alpha_entropy", self.alpha_entropy, allow_zero=True)
        if not 0.0 <= self.alpha_entropy_ramp <= 1.0:
            raise ConfigError(f"model.alpha_entropy_ramp={self.alpha_entropy_ramp!r} must be a fraction of the run in [0, 1]")
        if sorted(self.sh_degree_milestones) != list(self.sh_degree_milestones) or any(
            not 0.0 <= m <= 1.0 for m in self.sh_degree_milestones
        ):
            raise ConfigError("model.sh_degree_milestones must be increasing fractions in [0, 1]")


@dataclass(kw_only=True)
class CameraConfig:
    batch_size: int = 4
    """Views rendered per step; their azimuths are spread evenly over the circle. A multi-view prior (the bundled
    one: 4) takes whole groups of its views."""
    elevation_range: List[float] = field(default_factory=lambda: [-10.0, 45.0])
    """Elevation range in degrees (0: horizon, 90: straight above)."""
    azimuth_range: List[float] = field(default_factory=lambda: [-180.0, 180.0])
    """Azimuth range in degrees (0: the object's front)."""
    radius_range: List[float] = field(default_factory=lambda: [2.0, 2.5])
    """Distance of the camera from the origin, world units."""
    fovy_range: List[float] = field(default_factory=lambda: [40.0, 50.0])
    """Vertical field of view in degrees."""
    front_half_angle: float = 45.0
    """Views within this many degrees of azimuth 0 are 'front', of 180 'back', others 'side'."""
    overhead_elevation: float = 60.0
    """Views above this elevation are 'overhead'."""

    def validate(self) -> None:
        _positive("camera", "batch_size", self.batch_size)
        _at_most("camera", "batch_size", self.batch_size, 64)
        _range("camera", "elevation_range", self.elevation_range, -89.0, 89.0)
        _range("camera", "azimuth_range", self.azimuth_range, -360.0, 360.0)
        _range("camera", "radius_range", self.radius_range, 1e-3)
        _range("camera", "fovy_range", self.fovy_range, 1.0, 170.0)
        if not 0.0 < self.front_half_angle <= 90.0:
            raise ConfigError(f"camera.front_half_angle={self.front_half_angle!r} must be in (0, 90]")


@dataclass(kw_only=True)
class RenderConfig:
    backend: str = "auto"
    """'auto' (gsplat on CUDA, the PyTorch reference on CPU), 'gsplat' or 'torch'."""
    resolution: int = 64
    """Render side in pixels at the start of the run."""
    resolution_milestones: List[List[Any]] = field(default_factory=list)
    """[[fraction, side], ...]: from that fraction of the run on, render at that side (coarse to fine)."""
    background: str = "white"
    """'white', 'black', 'random' (a random colour per view, a common SDS trick) or 'color'."""
    background_color: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """RGB in [0, 1] used when background='color'."""
    near_plane: float = 0.01
    """Gaussians closer to the camera than this are culled."""
    eps2d: float = 0.3
    """Low-pass filter (pixels^2) added to every 2D covariance, as in 3DGS and gsplat."""

    def validate(self) -> None:
        _choice("render", "backend", self.backend, ["auto", "gsplat", "torch"])
        _positive("render", "resolution", self.resolution)
        _at_most("render", "resolution", self.resolution, MAX_SIDE)
        self.resolution_milestones = _milestones("render", "resolution_milestones", self.resolution_milestones,
                                                 "side", lambda v: 0 < v <= MAX_SIDE, f"sides in [1, {MAX_SIDE}]")
        _choice("render", "background", self.background, ["white", "black", "random", "color"])
        if len(self.background_color) != 3 or any(not 0.0 <= c <= 1.0 for c in self.background_color):
            raise ConfigError(f"render.background_color={self.background_color!r} must be 3 values in [0, 1]")


@dataclass(kw_only=True)
class GuidanceConfig:
    type: str = "pixel"
    """'pixel' (a pixel-space conditional UNet in diffusers format; the bundled prior is one), 'stable-diffusion'
    (latent space, needs weights) or 'world' (the procedural world's exact oracle prior, no weights)."""
    model: str = "bundled"
    """Hub id or local folder of the diffusion model (diffusers layout), or 'bundled' for the prior shipped with
    splatgen (pixel space, trained on the procedural world); unused by 'world'."""
    dtype: str = "auto"
    """'auto' (fp16 on CUDA, fp32 on CPU), 'fast' (fp16 on CUDA; bf16 on CPUs that compute it in hardware,
    AVX512-BF16 or AMX, else fp32), 'fp32', 'fp16' or 'bf16'."""
    guidance_scale: float = 7.5
    """Classifier-free guidance scale s in uncond + s * (cond - uncond) (the bundled prior's default; Stable
    Diffusion SDS uses about 100, configs/sd21.yaml)."""
    guidance_scale_milestones: List[List[Any]] = field(default_factory=list)
    """[[fraction, scale], ...]: from that fraction of the run on, guide with that scale (guidance_scale before the
    first; empty: one scale for the whole run). The bundled default config sets [[0.5, 3.5]]: there,
    guidance.guidance_scale sets the first half only; add guidance.guidance_scale_milestones=[] for one scale."""
    negative_prompt: str = ""
    """Prompt whose prediction replaces the unconditional one (empty: the plain unconditional)."""
    view_dependent: bool = True
    """Append ', front view' / ', side view' / ', back view' / ', overhead view' to the prompt per view."""
    loss: str = "sds"
    """Score-distillation loss (splatgen/guidance/losses.py has each formula): 'sds' (score distillation sampling:
    DreamFusion, Poole et al. 2022), 'csd' (classifier score distillation, the classifier-free direction alone: Yu
    et al. 2023), 'nfsd' (noise-free score distillation: Katzir et al., ICLR 2024), 'ism' (interval score matching
    on a DDIM-inverted trajectory: LucidDreamer, Liang et al., CVPR 2024; guidance.ism_*) or 'vsd' (variational
    score distillation against a model of the renders trained alongside: ProlificDreamer, Wang et al., NeurIPS
    2023; guidance.vsd_*). Each works with every guidance type and with guidance.perp_neg."""
    perp_neg: bool = False
    """Perp-Neg (Armandpour et al. 2023): each view's positive prompt interpolates the direction prompts by azimuth,
    and the directions the view must not show are pushed away along their component perpendicular to the positive
    direction only (front views away from 'side', back views away from 'front' and 'side'). Two more prior rows
    per view; needs guidance.view_dependent."""
    perp_neg_weight: float = 1.0
    """Multiplier of Perp-Neg's negative weights (1: the paper's and threestudio's curves, up to 1.97 for 'front'
    on a back view)."""
    nfsd_t_small: float = 0.2
    """'nfsd': below this fraction of the training timesteps the domain term is the empty prompt's prediction
    (the paper's t < 200 of 1000); above it, the empty prompt's minus the negative prompt's."""
    ism_interval: float = 0.05
    """'ism': the interval delta between s = t - delta and t, as a fraction of the training timesteps
    (LucidDreamer anneals it from 100 to 25 of 1000)."""
    ism_inversion_steps: int = 3
    """'ism': DDIM inversion steps from the render to s (each one prior call of one row per view; LucidDreamer's
    default goes up to 5 steps of 200)."""
    vsd_estimator: str = "auto"
    """'vsd': the model of the renders' distribution: 'lora' (a LoRA of the prior's UNet with a camera embedding,
    trained on the renders: ProlificDreamer's; needs a UNet), 'renders' (the exact denoiser of the last
    guidance.vsd_buffer renders of the same view direction: no training, any prior) or 'auto' (lora where the prior
    has a UNet, else renders)."""
    vsd_lora_rank: int = 4
    """'vsd' with the LoRA estimator: rank of the adapters on the UNet's attention projections."""
    vsd_lr: float = 1e-3
    """'vsd' with the LoRA estimator: AdamW learning rate of the adapters and the camera embedding."""
    vsd_buffer: int = 16
    """'vsd' with the renders estimator: how many recent renders it holds."""
    weighting: str = "sds"
    """w(t) of the SDS gradient: 'sds' (1 - abar_t, DreamFusion), 'uniform' (1), 'snr' (sqrt(abar_t) (1 - abar_t))
    or 'dreamtime' (the TP-SDS prior W_d W_p normalised to mean 1 over the timestep range)."""
    grad_clip: float = 0.0
    """Clip every element of the SDS gradient to [-grad_clip, grad_clip] (0: off)."""
    cuda_graph: bool = True
    """On CUDA, replay the UNet's forward from a CUDA graph captured once per input shape (removes the
    kernel-launch overhead that dominates small UNets and single views); ignored on CPU."""
    compile: str = "off"
    """'off', 'unet', 'vae' or 'all': run the UNet's forward and/or the VAE encoder's forward and backward through
    torch.compile. The first compile of a shape takes tens of seconds (inductor caches it on disk for later
    processes); worth it for long runs, not for the bundled prior's short default (see the README's numbers)."""
    vae: str = "full"
    """Latent guidance: the encoder the SDS gradient flows through: 'full' (the model's own VAE encoder) or 'tiny'
    (a TAESD-style AutoencoderTiny from guidance.tiny_vae_model: about 9x fewer FLOPs at 512 x 512; its effect on
    quality depends on the tiny encoder's fidelity and is not measured here without its weights)."""
    tiny_vae_model: str = "madebyollin/taesd"
    """Hub id or folder of the AutoencoderTiny used when guidance.vae='tiny' (SD 1.x/2.x: madebyollin/taesd)."""
    vae_checkpointing: bool = False
    """Latent guidance: recompute the VAE encoder's activations during backward instead of keeping them (lower
    peak memory at 512 x 512 with several views, e.g. for 8 GB cards; one extra encoder forward per step)."""
    fused_group_norm: bool = False
    """Latent guidance on CUDA: run the VAE encoder channels-last with every GroupNorm (and the SiLU after it) done
    by one Triton kernel that reads and writes that layout (PyTorch's GroupNorm converts layouts around each norm).
    Off until measured on the GPU (``benchmarks/perf/group_norm.py``)."""
    world_views: int = 256
    """'world' prior: ground-truth views per object that define the exact denoiser."""
    world_resolution: int = 64
    """'world' prior: side in pixels of those views and of the model's input."""

    def validate(self) -> None:
        _choice("guidance", "type", self.type, GUIDANCE_TYPES)
        _choice("guidance", "dtype", self.dtype, ["auto", "fast", "fp32", "fp16", "bf16"])
        _choice("guidance", "compile", self.compile, ["off", "unet", "vae", "all"])
        _choice("guidance", "vae", self.vae, ["full", "tiny"])
        _positive("guidance", "guidance_scale", self.guidance_scale, allow_zero=True)
        self.guidance_scale_milestones = _milestones("guidance", "guidance_scale_milestones",
                                                     self.guidance_scale_milestones, "scale", lambda v: v >= 0.0,
                                                     "scales >= 0")
        _choice("guidance", "weighting", self.weighting, WEIGHTING_NAMES)
        _choice("guidance", "loss", self.loss, LOSS_NAMES)
        _choice("guidance", "vsd_estimator", self.vsd_estimator, VSD_ESTIMATOR_NAMES)
        _positive("guidance", "perp_neg_weight", self.perp_neg_weight, allow_zero=True)
        if self.perp_neg and not self.view_dependent:
            raise ConfigError("guidance.perp_neg=true needs guidance.view_dependent=true (its prompts are the view "
                              "directions)")
        if not 0.0 <= self.nfsd_t_small <= 1.0:
            raise ConfigError(f"guidance.nfsd_t_small={self.nfsd_t_small} must be a fraction in [0, 1]")
        if not 0.0 < self.ism_interval < 1.0:
            raise ConfigError(f"guidance.ism_interval={self.ism_interval} must be a fraction in (0, 1)")
        if not 1 <= self.ism_inversion_steps <= 50:
            raise ConfigError(f"guidance.ism_inversion_steps={self.ism_inversion_steps} must be in [1, 50]")
        if not 1 <= self.vsd_lora_rank <= 256:
            raise ConfigError(f"guidance.vsd_lora_rank={self.vsd_lora_rank} must be in [1, 256]")
        _positive("guidance", "vsd_lr", self.vsd_lr)
        if not 1 <= self.vsd_buffer <= 4096:
            raise ConfigError(f"guidance.vsd_buffer={self.vsd_buffer} must be in [1, 4096]")
        _positive("guidance", "grad_clip", self.grad_clip, allow_zero=True)
        _positive("guidance", "world_views", self.world_views)
        _positive("guidance", "world_resolution", self.world_resolution)
        _at_most("guidance", "world_views", self.world_views, 4096)
        _at_most("guidance", "world_resolution", self.world_resolution, 512)
        if self.type == "stable-diffusion" and self.model == "bundled":
            raise ConfigError(
                "guidance.model='bundled' is the bundled pixel-space prior; guidance.type=stable-diffusion needs a "
                "hub id (e.g. stabilityai/stable-diffusion-2-1-base) or a local folder in diffusers layout"
            )
        if self.type in ("stable-diffusion", "pixel") and not self.model:
            raise ConfigError(
                f"guidance.model is empty but guidance.type={self.type!r} needs weights: give a hub id "
                "(e.g. stabilityai/stable-diffusion-2-1-base) or a local folder in diffusers layout"
            )


@dataclass(kw_only=True)
class ScheduleConfig:
    timestep: str = "tp-sds"
    """Timestep schedule: 'tp-sds' (DreamTime), 'uniform' (DreamFusion), 'linear' (DreamGaussian) or 'step'
    (GaussianDreamer)."""
    t_min: float = 0.02
    """Smallest timestep as a fraction of the training timesteps."""
    t_max: float = 0.98
    """Largest timestep as a fraction of the training timesteps."""
    tp_m1: float = 800.0
    """TP-SDS: upper edge of the flat part of W_p (in training timesteps of T=1000; scaled for other T)."""
    tp_m2: float = 500.0
    """TP-SDS: lower edge of the flat part of W_p."""
    tp_s1: float = 300.0
    """TP-SDS: Gaussian width above m1."""
    tp_s2: float = 100.0
    """TP-SDS: Gaussian width below m2."""
    tp_use_wd: bool = True
    """TP-SDS: include W_d(t) = sqrt((1 - abar_t) / abar_t) in the prior."""
    tp_jitter: float = 0.0
    """TP-SDS: per-view uniform jitter of +-this fraction of T around the scheduled t (0: one t per step)."""
    step_t_max_end: float = 0.55
    """'step': t_max after the switch."""
    step_at: float = 0.4
    """'step': fraction of the run at which t_max drops to step_t_max_end."""

    def validate(self) -> None:
        _choice("schedule", "timestep", self.timestep, TIMESTEP_SCHEDULE_NAMES)
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ConfigError(f"schedule.t_min={self.t_min} and t_max={self.t_max} need 0 <= t_min < t_max <= 1")
        if self.tp_m2 > self.tp_m1:
            raise ConfigError(f"schedule.tp_m2={self.tp_m2} must be <= tp_m1={self.tp_m1}")
        _positive("schedule", "tp_s1", self.tp_s1)
        _positive("schedule", "tp_s2", self.tp_s2)
        _positive("schedule", "tp_jitter", self.tp_jitter, allow_zero=True)
        if not self.t_min <= self.step_t_max_end <= self.t_max:
            raise ConfigError(f"schedule.step_t_max_end={self.step_t_max_end} must lie in [t_min, t_max] = [{self.t_min}, {self.t_max}]")
        if not 0.0 <= self.step_at <= 1.0:
            raise ConfigError("schedule.step_at must be a fraction in [0, 1]")


@dataclass(kw_only=True)
class DensifyConfig:
    enabled: bool = True
    """Clone, split and prune Gaussians during the densification window."""
    backend: str = "auto"
    """'auto' (Triton kernels on CUDA, PyTorch on CPU), 'torch' or 'triton'."""
    start: float = 0.1
    """Fraction of the run at which densification starts."""
    stop: float = 0.7
    """Fraction of the run after which the set of Gaussians is frozen."""
    every: int = 50
    """Densify every this many steps inside the window (stretched for runs longer than ``reference_steps``)."""
    reference_steps: int = 0
    """Runs longer than this many steps stretch ``every`` and ``opacity_reset_every`` in proportion (``every *
    steps / reference_steps``, rounded), so they densify as many times as a run of this length does; shorter runs
    keep them. 0: both are steps whatever the run's length (a 500-step run then densifies seven times where a
    200-step run densifies twice)."""
    grad_threshold: float = 0.01
    """Mean norm of the image-size-normalised 2D-mean gradient above which a Gaussian grows (SDS scale)."""
    dense_scale: float = 0.01
    """Gaussians whose largest scale is below this fraction of the scene extent are cloned, larger are split."""
    scene_extent: float = 1.0
    """Scene extent in world units (radius of the object's bounding sphere)."""
    min_opacity: float = 0.01
    """Gaussians less opaque than this are pruned."""
    max_world_scale: float = 0.2
    """Gaussians whose largest scale exceeds this fraction of the scene extent are pruned."""
    max_screen_fraction: float = 0.25
    """Gaussians whose 2D radius exceeded this fraction of the image side since the last densify are pruned
    (0: off)."""
    split_shrink: float = 1.6
    """Children of a split get the parent's scales divided by this."""
    opacity_reset_every: int = 0
    """Reset all opacities to reset_opacity every this many steps inside the window (0: never)."""
    reset_opacity: float = 0.05
    """Opacity after a reset."""
    max_gaussians: int = 200_000
    """Hard cap: growth stops at this many Gaussians, whatever the gradients say."""

    def validate(self) -> None:
        _choice("densify", "backend", self.backend, ["auto", "torch", "triton"])
        if not 0.0 <= self.start <= self.stop <= 1.0:
            raise ConfigError(f"densify.start={self.start} and stop={self.stop} need 0 <= start <= stop <= 1")
        _positive("densify", "every", self.every)
        _positive("densify", "reference_steps", self.reference_steps, allow_zero=True)
        _positive("densify", "grad_threshold", self.grad_threshold)
        _positive("densify", "dense_scale", self.dense_scale)
        _positive("densify", "scene_extent", self.scene_extent)
        if not 0.0 <= self.min_opacity < 1.0:
            raise ConfigError(f"densify.min_opacity={self.min_opacity} must be in [0, 1)")
        _positive("densify", "max_world_scale", self.max_world_scale)
        _positive("densify", "max_screen_fraction", self.max_screen_fraction, allow_zero=True)
        if self.split_shrink <= 1.0:
            raise ConfigError(f"densify.split_shrink={self.split_shrink} must be > 1")
        _positive("densify", "opacity_reset_every", self.opacity_reset_every, allow_zero=True)
        if not 0.0 < self.reset_opacity < 1.0:
            raise ConfigError(f"densify.reset_opacity={self.reset_opacity} must be in (0, 1)")
        _positive("densify", "max_gaussians", self.max_gaussians)
        _at_most("densify", "max_gaussians", self.max_gaussians, MAX_GAUSSIANS)


@dataclass(kw_only=True)
class OptimConfig:
    lr_means: float = 1e-3
    """Adam learning rate of the means at the start (decays exponentially to lr_means_final)."""
    lr_means_final: float = 2e-5
    """Learning rate of the means at the last step."""
    lr_scales: float = 5e-3
    """Learning rate of the log scales."""
    lr_quats: float = 1e-3
    """Learning rate of the quaternions."""
    lr_opacities: float = 5e-2
    """Learning rate of the logit opacities."""
    lr_sh0: float = 1e-2
    """Learning rate of the SH DC coefficients."""
    lr_shN: float = 5e-4
    """Learning rate of the higher SH bands."""

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            _positive("optim", f.name, getattr(self, f.name), allow_zero=True)


@dataclass(kw_only=True)
class NerfConfig:
    """The NeRF baseline (``model.type=nerf``). Defaults follow stable-dreamfusion's ``--backbone grid`` (its
    main.py / nerf/network_grid.py / nerf/renderer.py); docs/NERF.md lists every difference."""

    bound: float = 1.0
    """Half side of the cube [-bound, bound]^3 the field lives in (stable-dreamfusion: --bound 1)."""
    num_levels: int = 16
    """Hash-grid levels (stable-dreamfusion: 16)."""
    level_dim: int = 2
    """Features per level (2)."""
    base_resolution: int = 16
    """Coarsest grid resolution (16)."""
    log2_hashmap_size: int = 19
    """log2 of the hash table size per level (19)."""
    desired_resolution: int = 2048
    """Finest grid resolution (2048 * bound)."""
    hidden_dim: int = 64
    """Width of the MLP that maps the features to density and albedo (64)."""
    num_layers: int = 3
    """Layers of that MLP (3)."""
    density_activation: str = "exp"
    """'exp' (stable-dreamfusion's default) or 'softplus'."""
    blob_density: float = 5.0
    """Density added at the centre by the initial Gaussian blob (5)."""
    blob_radius: float = 0.2
    """Radius of that blob (0.2)."""
    num_steps: int = 64
    """Uniform samples per ray of the coarse pass (64)."""
    upsample_steps: int = 32
    """Importance samples per ray added from the coarse weights (32)."""
    grid_resolution: int = 128
    """Side of the occupancy grid whose empty cells are skipped (128)."""
    density_thresh: float = 10.0
    """A cell is occupied when its (decayed, running-max) density exceeds min(mean density, this) (10)."""
    occupancy_decay: float = 0.95
    """Decay of the occupancy grid's densities at each update (0.95)."""
    update_every: int = 16
    """Steps between occupancy-grid updates (update_extra_interval 16)."""
    lr: float = 1e-3
    """Learning rate of the MLP; the hash grid gets lr * encoder_lr_mult (stable-dreamfusion: 1e-3, x10)."""
    encoder_lr_mult: float = 10.0
    """Learning-rate multiplier of the hash-grid features."""
    lambda_entropy: float = 1e-3
    """Weight of the binary-entropy loss on the rays' opacity (1e-3)."""
    lambda_orient: float = 1e-2
    """Weight of the orientation loss on normals facing away from the camera (1e-2)."""
    lambda_opacity: float = 0.0
    """Weight of a loss on the mean opacity (0)."""
    albedo_ratio: float = 0.2
    """Fraction of the run rendered with albedo only before shading starts (DreamFusion's warm-up)."""
    min_ambient: float = 0.1
    """Shaded views use ambient ~ U[min_ambient, 1] (0.1)."""
    textureless_ratio: float = 0.2
    """Probability that a shaded view is textureless (white albedo) rather than lambertian (0.2)."""
    max_ray_batch: int = 4096
    """Rays per chunk when rendering without gradients (evaluation, previews)."""
    export_resolution: int = 128
    """Grid side used to sample the density for the exported .ply point cloud."""

    def validate(self) -> None:
        _positive("nerf", "bound", self.bound)
        for name in ("num_levels", "level_dim", "base_resolution", "hidden_dim", "num_layers", "num_steps",
                     "grid_resolution", "update_every", "max_ray_batch", "export_resolution"):
            _positive("nerf", name, getattr(self, name))
        for name, limit in (("num_levels", 64), ("level_dim", 16), ("hidden_dim", 4096), ("num_layers", 64),
                            ("num_steps", 4096), ("upsample_steps", 4096), ("grid_resolution", 1024),
                            ("max_ray_batch", 1 << 22), ("export_resolution", 1024), ("desired_resolution", 1 << 20)):
            _at_most("nerf", name, getattr(self, name), limit)
        _positive("nerf", "upsample_steps", self.upsample_steps, allow_zero=True)
        if not 10 <= self.log2_hashmap_size <= 24:
            raise ConfigError(f"nerf.log2_hashmap_size={self.log2_hashmap_size} must be in [10, 24]")
        if self.desired_resolution < self.base_resolution:
            raise ConfigError(f"nerf.desired_resolution={self.desired_resolution} must be >= base_resolution="
                              f"{self.base_resolution}")
        _choice("nerf", "density_activation", self.density_activation, ["exp", "softplus"])
        for name in ("blob_density", "blob_radius", "density_thresh", "lr", "encoder_lr_mult", "lambda_entropy",
                     "lambda_orient", "lambda_opacity"):
            _positive("nerf", name, getattr(self, name), allow_zero=name not in ("blob_radius", "lr"))
        for name in ("occupancy_decay", "albedo_ratio", "min_ambient", "textureless_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"nerf.{name}={getattr(self, name)} must be in [0, 1]")


@dataclass(kw_only=True)
class Config:
    prompt: str = ""
    """The text prompt (normally given on the command line, not in a file)."""
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    nerf: NerfConfig = field(default_factory=NerfConfig)

    def validate(self) -> "Config":
        for f in dataclasses.fields(self):
            sub = getattr(self, f.name)
            if dataclasses.is_dataclass(sub):
                _finite_everywhere(sub, f.name)
            if hasattr(sub, "validate"):
                sub.validate()
        if self.model.num_points > self.densify.max_gaussians:
            raise ConfigError(f"model.num_points={self.model.num_points} is more than densify.max_gaussians="
                              f"{self.densify.max_gaussians}; raise the cap or start with fewer Gaussians")
        return self


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def read_config_file(name: str | Path) -> tuple[str, str]:
    """(where, YAML text) of a config given as a path, or as the name of a bundled config (``default``,
    ``sd21``...; see ``splatgen config --list``). A path wins over a bundled name."""
    p = Path(name)
    if p.is_file():
        try:
            return str(p), p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p} is not a UTF-8 text file (byte {exc.start}); a config is YAML text") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    text = bundled_config_text(str(name))
    if text is not None:
        return f"bundled config {str(name)!r}", text
    if p.exists():
        raise ConfigError(f"config {str(name)!r} is not a file")
    raise ConfigError(f"config file {str(name)!r} not found; give a path or one of the bundled names {config_names()}")


def config_keys() -> List[str]:
    """Every dotted key a config holds (``prompt``, ``run.steps``...), in the order ``splatgen config`` lists them."""
    keys, default = [], Config()
    for sec in dataclasses.fields(Config):
        value = getattr(default, sec.name)
        fields = dataclasses.fields(value) if dataclasses.is_dataclass(value) else ()
        keys += [f"{sec.name}.{f.name}" for f in fields] or [sec.name]
    return keys


def _explain(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "Key" in type(exc).__name__ and key:
        # 0.65: a swapped pair of letters still finds its key ('rnu' -> 'run'), 'trainer' no longer finds 'render'
        close = difflib.get_close_matches(str(key), [*config_keys(), *SECTIONS], n=1, cutoff=0.65)
        if close:
            hint = f"did you mean {close[0]!r}? "
        else:  # a dotted key is in a known section (OmegaConf names the section alone when that is unknown)
            hint = "" if "." in str(key) else f"known sections: {sorted(SECTIONS)}; "
        # `splatgen config`, not a file: an installed wheel has no configs/ folder
        return f"unknown config key {key!r}; {hint}`splatgen config` lists every key"
    return f"bad value for config key {key!r}: {msg}" if key else msg


#: OmegaConf's interpolation that reads an environment variable: refused in config files and overrides
_ENV_INTERPOLATION = re.compile(r"\$\{\s*oc\.env\s*:")


def _no_environment(text: str, where: str) -> None:
    """A config (often shared: a lab's file, a downloaded run's config.yaml) must not copy the environment of the
    person who runs it into the run's saved config.yaml: ``${oc.env:...}`` is refused; write the value itself."""
    if _ENV_INTERPOLATION.search(text):
        raise ConfigError(f"{where} reads an environment variable (${{oc.env:...}}); splatgen does not copy the "
                          "environment into a run's config: write the value itself")


#: the bundled config applied when none is given (``splatgen generate`` and ``splatgen config``, ``splatgen.generate``):
#: its values over the dataclass defaults below are the defaults a user gets.
DEFAULT_PRESET = "default"


def config_files(config: str | Path | Sequence[str | Path] | None) -> List[str | Path]:
    """The config files a run applies: ``config`` (a bundled name or a path, or a list of them), or
    :data:`DEFAULT_PRESET` when it is None."""
    if config is None:
        return [DEFAULT_PRESET]
    return [config] if isinstance(config, (str, Path)) else list(config)


#: what an override's key may look like: dotted identifiers (``run.steps``); OmegaConf's parser fails with a
#: traceback on some other shapes ('[' for one)
_OVERRIDE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def load_config(
    files: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    extra: dict | None = None,
) -> Config:
    """Merge defaults, YAML ``files`` (in order), ``key=value`` ``overrides``, then a nested dict ``extra``
    (the Python API's keyword overrides); later layers win."""
    base = OmegaConf.structured(Config)
    try:
        layers, names = [base], ["the defaults"]
        for f in files:
            where, text = read_config_file(f)
            _no_environment(text, where)
            try:
                data = OmegaConf.create(text)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
                raise ConfigError(f"{where} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
            if not isinstance(data, type(base)) and data is not None:
                raise ConfigError(f"{where}: a config file must hold a mapping of sections")
            layers.append(data)
            names.append(where)
        for o in overrides:
            if "=" not in o:
                raise ConfigError(f"override {o!r} is not of the form key=value (e.g. run.steps=200)")
            key = o.split("=", 1)[0].strip()
            if not _OVERRIDE_KEY.fullmatch(key):
                raise ConfigError(f"override {o!r}: {key!r} is not a config key; keys are section.name, e.g. "
                                  "run.steps=200 (`splatgen config` lists them)")
            _no_environment(o, f"override {o!r}")
        for o in overrides:
            try:
                layers.append(OmegaConf.from_dotlist([o]))
            except yaml.YAMLError as exc:
                raise ConfigError(f"override {o!r}: the value is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
            names.append(f"override {o!r}")
        if extra:
            layers.append(OmegaConf.create(extra))
            names.append("the keyword overrides")
        merged = layers[0]
        for layer, name in zip(layers[1:], names[1:]):
            try:
                merged = OmegaConf.merge(merged, layer)
            except (TypeError, ValueError) as exc:  # OmegaConf's own, e.g. a mapping where a list belongs
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                key = getattr(exc, "full_key", None)
                if key:  # a value of the wrong type for a typed key: one line, the key and what was wrong
                    raise ConfigError(f"{name}: bad value for {key}: {first}") from None
                raise ConfigError(f"{name}: a value has the wrong shape for its key ({first})") from None
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(_explain(exc)) from None
    assert isinstance(cfg, Config)
    return cfg.validate()


def config_to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(config_to_yaml(cfg))


def field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under each field of a config dataclass (for --help and docs)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(getattr(b, "value", None), ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())  # type: ignore[union-attr]
    return docs


def describe_config(cfg: Optional[Config] = None, source: str = "") -> str:
    """Every key with its value in ``cfg`` (None: the dataclass defaults) and its docstring, for ``splatgen config``.

    ``source`` names where ``cfg``'s values come from (``splatgen config`` passes :data:`DEFAULT_PRESET`'s): a key
    it sets to another value than the dataclass default says so, with that default (what ``Config()`` holds)."""
    built_in = Config()
    cfg = built_in if cfg is None else cfg
    lines = []
    for sec in dataclasses.fields(Config):
        if sec.name == "prompt":
            continue
        obj, base = getattr(cfg, sec.name), getattr(built_in, sec.name)
        docs = field_docs(type(obj))
        lines.append(f"[{sec.name}]")
        for f in dataclasses.fields(obj):
            value, default = getattr(obj, f.name), getattr(base, f.name)
            note = f"  # {source}; built-in default {default!r}" if source and value != default else ""
            lines.append(f"  {sec.name}.{f.name} = {value!r}{note}")
            if f.name in docs:
                lines.append(f"      {docs[f.name]}")
    return "\n".join(lines)
