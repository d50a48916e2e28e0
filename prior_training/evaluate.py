"""Measuring the prior: 2D samples scored by the evaluator CLIP (:mod:`splatgen.world.clip_eval`), ground-truth
views and grids.

CLIP R-precision (here with R = 1, i.e. top-1 retrieval). An image i comes with its true caption c_i and a
set of candidate captions S_i that contains c_i. With unit-norm CLIP features, the image counts as
*correct* when ``argmax_{c in S_i} <f_image(i), f_text(c)> == c_i``; R-precision is the fraction of
correct images. For the world, S_i is **every kind x colour caption of the world with the same view
direction as c_i** ("<a|an> <colour> <kind>, <direction> view" for all 14 kinds and 11 colours, held-out
pairs included: 154 candidates), so a correct image has the right kind *and* the right colour. The kind
and colour accuracies of the top caption are reported too, and, for the kinds whose front and back differ,
the direction accuracy (the true caption's direction ranked first among the front/side/back captions of
the true pair).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from splatgen.cameras import DIRECTIONS, orbit_cameras
from splatgen.guidance.text_encoders import EVALUATOR_FOLDER, TEXT_ENCODER_FOLDER, OpenCLIPPromptEncoder
from splatgen.world.captions import CaptionTable
from splatgen.world.clip_eval import Evaluator, r_precision, run_r_precision  # noqa: F401  (re-exported)
from splatgen.world.grammar import FRONT_BACK_KINDS, make_object
from splatgen.world.raycast import render_world

from .data import ELEVATION_RANGE, FOVY_RANGE, RADIUS_RANGE, STREAMS, held_out_pair_ids


def summarise(scores: Dict[str, Tensor], pair_ids: Tensor, dir_ids: Tensor, table: Optional[CaptionTable] = None) -> Dict[str, Any]:
    """R-precision, kind/colour accuracy over all, seen and held-out pairs; direction accuracy on the
    front/back kinds' front and back views."""
    table = table or CaptionTable()
    held = torch.tensor(held_out_pair_ids(table))
    is_held = torch.isin(pair_ids.cpu(), held)
    fb_kinds = torch.tensor([table.kinds.index(k) for k in sorted(FRONT_BACK_KINDS)])
    fb = torch.isin(pair_ids.cpu() // len(table.colours), fb_kinds) & torch.isin(dir_ids.cpu(), torch.tensor([DIRECTIONS.index("front"), DIRECTIONS.index("back")]))

    def mean(x: Tensor, m: Tensor) -> Optional[float]:
        return round(float(x[m].float().mean()), 4) if bool(m.any()) else None

    out: Dict[str, Any] = {}
    for name, m in (("all", torch.ones_like(is_held)), ("seen", ~is_held), ("held_out", is_held)):
        out[name] = {
            "n": int(m.sum()),
            "r_precision": mean(scores["correct"], m),
            "kind_accuracy": mean(scores["kind_correct"], m),
            "colour_accuracy": mean(scores["colour_correct"], m),
        }
    out["front_back_direction_accuracy"] = mean(scores["direction_correct"], fb)
    return out


# ------------------------------------------------------------------------------------------------ views
def _direction_azimuths(direction: str, n: int, g: torch.Generator) -> Tensor:
    u = torch.rand(n, generator=g, dtype=torch.float64).float()
    if direction == "front":
        return -40.0 + 80.0 * u
    if direction == "back":
        return 140.0 + 80.0 * u  # 140..220, i.e. within 40 deg of 180
    if direction == "side":
        side = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
        return side * (50.0 + 80.0 * u)
    return 360.0 * u  # overhead: any azimuth


def render_ground_truth(
    pair_ids: Sequence[int], dir_ids: Sequence[int], resolution: int = 64, seed: int = 0, stream: str = "test", supersample: int = 2, device: str = "cpu"
) -> Tensor:
    """[N, 3, S, S] in [-1, 1]: one view per (pair, direction), each of a fresh object of ``stream`` (variation
    seeds disjoint from the prior's), from a camera inside that direction's sector."""
    table = CaptionTable()
    g = torch.Generator().manual_seed(seed)
    out = []
    for p, d in zip(pair_ids, dir_ids):
        kind, colour = table.pair(int(p))
        direction = DIRECTIONS[int(d)]
        obj_seed = 3 * int(torch.randint(1 << 30, (), generator=g)) + STREAMS[stream]
        az = _direction_azimuths(direction, 1, g)
        if direction == "overhead":
            el = torch.tensor([70.0])
        else:
            s_lo, s_hi = math.sin(math.radians(ELEVATION_RANGE[0])), math.sin(math.radians(min(ELEVATION_RANGE[1], 55.0)))
            el = torch.rad2deg(torch.asin(s_lo + (s_hi - s_lo) * torch.rand(1, generator=g)))
        r = RADIUS_RANGE[0] + (RADIUS_RANGE[1] - RADIUS_RANGE[0]) * torch.rand(1, generator=g)
        fov = FOVY_RANGE[0] + (FOVY_RANGE[1] - FOVY_RANGE[0]) * torch.rand(1, generator=g)
        cams = orbit_cameras(el, az, r, fov, resolution, device=device)
        assert cams.directions[0] == direction, (cams.directions, direction)
        rgb = render_world(make_object(kind, colour, obj_seed), cams, supersample=supersample)["rgb"]
        out.append(rgb.permute(0, 3, 1, 2).cpu() * 2.0 - 1.0)
    return torch.cat(out)


def evaluation_set(
    directions: Sequence[str] = ("front", "side", "back"), per_caption: int = 1, pairs_subset: Optional[Sequence[int]] = None
) -> Tuple[Tensor, Tensor]:
    """(pair ids, direction ids) of every kind x colour pair (or of ``pairs_subset``) x direction, ``per_caption`` times."""
    table = CaptionTable()
    pairs, dirs = [], []
    for p in range(table.num_pairs) if pairs_subset is None else pairs_subset:
        for d in directions:
            for _ in range(per_caption):
                pairs.append(p)
                dirs.append(DIRECTIONS.index(d))
    return torch.tensor(pairs), torch.tensor(dirs)


# ------------------------------------------------------------------------------------------------ sampling
def load_prior_unet(folder: Union[str, Path], device: Union[str, torch.device], dtype: torch.dtype = torch.float32):
    from diffusers import DDPMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(folder) / "unet", torch_dtype=dtype).to(device).eval().requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(Path(folder) / "scheduler")
    return unet, scheduler


@torch.no_grad()
def sample_prior(
    folder: Union[str, Path],
    captions: Sequence[str],
    device: Union[str, torch.device] = "cpu",
    steps: int = 50,
    guidance_scale: float = 5.0,
    seed: int = 0,
    dtype: Optional[torch.dtype] = None,
    start: str = "white",
    batch_size: int = 256,
    unet: Any = None,
) -> Tensor:
    """2D samples [N, 3, S, S] in [-1, 1] of a prior folder for ``captions`` (DDIM, classifier-free guidance
    with the encoder's "" as the unconditional prompt, as in training)."""
    from .unet import ddim_sample

    device = torch.device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    if unet is None:
        unet, scheduler = load_prior_unet(folder, device, dtype)
        abar = scheduler.alphas_cumprod
    else:
        from .unet import make_scheduler

        abar = make_scheduler().alphas_cumprod
    enc = OpenCLIPPromptEncoder.from_folder(Path(folder) / TEXT_ENCODER_FOLDER, device)
    cond = enc.encode(list(captions))
    uncond = enc.encode([""])
    enc.release()
    return ddim_sample(unet, cond, uncond, abar, steps, guidance_scale, torch.Generator().manual_seed(seed), start, batch_size)


def evaluate_prior(
    folder: Union[str, Path],
    device: Union[str, torch.device] = "cpu",
    per_caption: int = 2,
    steps: int = 50,
    guidance_scales: Sequence[float] = (5.0,),
    seed: int = 0,
    directions: Sequence[str] = ("front", "side", "back"),
    start: str = "white",
    pairs_subset: Optional[Sequence[int]] = None,
) -> Dict[str, Any]:
    """The prior's numbers: evaluator R-precision of its 2D samples for every pair x direction (seen vs
    held-out, per guidance scale) and of ground-truth renders (the evaluator's ceiling).

    Returns ``{"metrics": {...}, "samples": {scale: [N,3,S,S]}, "ground_truth": [N,3,S,S], "pair_ids", "dir_ids"}``.
    """
    import time

    device = torch.device(device)
    folder = Path(folder)
    table = CaptionTable()
    ev = Evaluator(folder / EVALUATOR_FOLDER, device)
    pair_ids, dir_ids = evaluation_set(directions, per_caption, pairs_subset)
    unet, scheduler = load_prior_unet(folder, device, torch.float16 if device.type == "cuda" else torch.float32)
    S = unet.config.sample_size
    S = S if isinstance(S, int) else S[0]
    t0 = time.time()
    gt_pairs, gt_dirs = evaluation_set(directions, 1, pairs_subset)
    gt = render_ground_truth(gt_pairs.tolist(), gt_dirs.tolist(), resolution=S, seed=seed + 1)
    gt_time = time.time() - t0
    metrics: Dict[str, Any] = {
        "protocol": (
            f"evaluator CLIP R-precision (top-1 among the 154 kind x colour captions of the same view direction) of "
            f"{per_caption} DDIM-{steps} sample(s) per caption for every pair x {list(directions)}; start={start}"
        ),
        "ground_truth": summarise(ev.score(gt, gt_pairs, gt_dirs), gt_pairs, gt_dirs, table),
    }
    captions = [table.texts[i] for i in table.caption_ids(pair_ids, dir_ids).tolist()]
    samples = {}
    for s in guidance_scales:
        t0 = time.time()
        x = sample_prior(folder, captions, device, steps, s, seed, start=start, unet=unet)
        dt = time.time() - t0
        samples[s] = x.cpu()
        metrics[f"samples_cfg{s:g}"] = {**summarise(ev.score(x, pair_ids, dir_ids), pair_ids, dir_ids, table), "seconds": round(dt, 1)}
    metrics["ground_truth_render_seconds"] = round(gt_time, 1)
    return {"metrics": metrics, "samples": samples, "ground_truth": gt, "pair_ids": pair_ids, "dir_ids": dir_ids}


# ------------------------------------------------------------------------------------------------ grids
def save_grid(images: Tensor, path: Union[str, Path], nrow: int, scale: int = 1) -> Path:
    """Save [N, 3, H, W] images in [-1, 1] as one PNG, ``nrow`` images per row (white gaps)."""
    from PIL import Image

    x = ((images.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu()
    N, _, H, W = x.shape
    rows = math.ceil(N / nrow)
    pad = 2
    canvas = torch.full((3, rows * (H + pad) + pad, nrow * (W + pad) + pad), 255, dtype=torch.uint8)
    for i in range(N):
        r, c = divmod(i, nrow)
        canvas[:, pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = x[i]
    img = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
