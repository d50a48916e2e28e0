"""Measuring the prior: CLIP R-precision by the evaluator CLIP, 2D samples, ground-truth views and grids.

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
import torch.nn.functional as F
from torch import Tensor

from ..cameras import DIRECTIONS, orbit_cameras
from ..world.grammar import FRONT_BACK_KINDS, make_object
from ..world.raycast import render_world
from .clip_model import EVALUATOR_FOLDER, TEXT_ENCODER_FOLDER, OpenCLIPPromptEncoder, load_clip_folder
from .data import ELEVATION_RANGE, FOVY_RANGE, RADIUS_RANGE, STREAMS, CaptionTable, held_out_pair_ids


def r_precision(image_features: Tensor, text_features: Tensor, true_index: Tensor, candidates: Optional[Tensor] = None) -> Tensor:
    """[N] bool: whether each image's true caption scores highest among its candidates.

    Args:
        image_features: [N, E]; text_features: [M, E] (normalised here).
        true_index: [N] indices into the M captions.
        candidates: [N, M] bool (True: caption m is a candidate for image n; must include the true one), or
            [N, K] long indices of the candidate captions; None: all M captions.
    """
    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(text_features.float(), dim=-1)
    scores = img @ txt.T  # [N, M]
    if candidates is not None:
        if candidates.dtype == torch.bool:
            mask = candidates
        else:
            mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, candidates.long(), True)
        assert bool(mask.gather(1, true_index.long()[:, None]).all()), "every true caption must be a candidate"
        scores = scores.masked_fill(~mask, -math.inf)
    return scores.argmax(dim=1) == true_index.long()


class Evaluator:
    """The evaluator CLIP (``evaluator_clip/`` of a prior) as a scorer of images against the world's captions."""

    def __init__(self, folder: Union[str, Path], device: Union[str, torch.device] = "cpu") -> None:
        self.device = torch.device(device)
        self.model, self.tokenizer, self.meta = load_clip_folder(folder, self.device)
        self.table = CaptionTable()
        self.image_size = int(self.model.visual.image_size[0]) if isinstance(self.model.visual.image_size, (tuple, list)) else int(self.model.visual.image_size)
        with torch.no_grad():
            self.text_features = self.model.encode_text(self.tokenizer(self.table.texts).to(self.device), normalize=True).float()

    @torch.no_grad()
    def image_features(self, images: Tensor, batch_size: int = 512) -> Tensor:
        """[N, E] unit features of images [N, 3, H, W] in [-1, 1] (resized to the CLIP's input size)."""
        out = []
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].to(self.device, torch.float32)
            if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
            out.append(self.model.encode_image(x, normalize=True).float())
        return torch.cat(out)

    def score(self, images: Tensor, pair_ids: Tensor, dir_ids: Tensor) -> Dict[str, Tensor]:
        """Per image (all [N]): ``correct`` (R-precision hit), ``kind_correct``, ``colour_correct``,
        ``direction_correct`` (among front/side/back of the true pair) and ``predicted_pair``."""
        t = self.table
        feats = self.image_features(images)
        pair_ids, dir_ids = pair_ids.cpu().long(), dir_ids.cpu().long()
        all_pairs = torch.arange(t.num_pairs)
        cand = t.caption_ids(all_pairs[None, :].expand(len(pair_ids), -1), dir_ids[:, None].expand(-1, t.num_pairs))  # [N, P]
        true = t.caption_ids(pair_ids, dir_ids)
        tf = self.text_features.cpu()
        scores = feats.cpu() @ tf.T
        cand_scores = scores.gather(1, cand)
        pred_pair = cand_scores.argmax(1)
        C = len(t.colours)
        correct = r_precision(feats.cpu(), tf, true, cand)
        three = torch.tensor([DIRECTIONS.index(d) for d in ("front", "side", "back")])
        dir_cand = t.caption_ids(pair_ids[:, None].expand(-1, 3), three[None, :].expand(len(pair_ids), -1))
        dir_pred = three[scores.gather(1, dir_cand).argmax(1)]
        return {
            "correct": correct,
            "kind_correct": pred_pair // C == pair_ids // C,
            "colour_correct": pred_pair % C == pair_ids % C,
            "direction_correct": dir_pred == dir_ids,
            "predicted_pair": pred_pair,
        }


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
    enc = OpenCLIPPromptEncoder.from_folder(Path(folder) / TEXT_ENCODER_FOLDER, device, vocabulary_check=False)
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


def run_r_precision(evaluator: Evaluator, images: Tensor, prompt: str, directions: Sequence[str]) -> Optional[float]:
    """R-precision of a run's renders [V, 3, H, W] in [0, 1] for a world prompt, one view direction per
    render (``splatgen evaluate``); None when the prompt is not a kind/colour caption of the world."""
    from ..world.grammar import is_world_prompt, parse_prompt

    if not is_world_prompt(prompt):
        return None
    obj = parse_prompt(prompt)
    t = evaluator.table
    pair = torch.full((len(directions),), t.pair_id(obj.kind, obj.colour))
    dirs = torch.tensor([DIRECTIONS.index(d) for d in directions])
    return float(evaluator.score(images * 2.0 - 1.0, pair, dirs)["correct"].float().mean())


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
