"""Metrics of a generated 3D model against the ground truth of its world object, over held-out views.

Held-out cameras (:func:`heldout_cameras`): two rings at radius 2.25 and fovy 45 deg (the middle of the
default training ranges), half the views at elevation 5 deg with azimuths ``0, 360/k, ...`` and half at
elevation 30 deg offset by half a step. They are fixed (no random draw), so they never coincide with the
oracle's randomly drawn views, and they include the exact front (azimuth 0) and back (180).

Metrics (all on the model rendered over white, and the ray-cast ground truth supersampled 2x2):

- ``iou``: silhouette IoU, ``alpha > 0.5`` vs ground-truth coverage ``> 0.5``, averaged over views.
- ``silhouette_precision`` / ``silhouette_recall``: the two halves of ``iou``, averaged over views: the share
  of the model's silhouette inside the true one (below 1: the model is too fat, or has floaters) and of the
  true silhouette the model covers (below 1: parts missing or too thin).
- ``psnr_fg``: PSNR (dB, peak 1) of the RGB over the ground-truth foreground pixels, pooled over all views
  (one MSE over every foreground pixel and channel; capped at 100 dB).
- ``depth_abs_err``: mean ``|depth - depth_gt|`` (world units, camera z) over pixels inside both masks;
  the renderer's depth is its alpha-normalised expected depth. None when no pixel is in both.
- ``chamfer``: symmetric Chamfer distance (world units, mean of unsquared nearest-neighbour distances,
  averaged over both directions) between the centres of the Gaussians with opacity > 0.1 and points
  sampled uniformly on the true surface (:func:`~splatgen.world.raycast.sample_surface`). Also reported
  one-sided: ``chamfer_acc`` (centres -> surface: are the Gaussians on the object?) and ``chamfer_comp``
  (surface -> centres: is all of the object covered?). None when no Gaussian is that opaque.
- ``janus`` (objects with a front and back only, else None): over the held-out views in the front or back
  cone (azimuth within ``front_half_angle`` of 0 or 180), the fraction whose render is closer (MSE over
  the union of the two ground-truth masks) to the ground-truth view from the *opposite* camera (azimuth +
  180, same elevation, radius and field of view) than to its own ground-truth view. The opposite view is
  compared as rendered, not mirrored: the Janus failure is the model painting, on its back, what the
  prior's *front-view images* look like (a face, headlights, a door) in image space, so the back render of
  a Janus model resembles the raw front image; a mirror image would instead be the true object seen
  through a mirror, which no prior is pushed toward. 0 is a correct model, ~0.5 a model with no
  front/back structure, 1 a model whose every front/back view shows the other side.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..cameras import Cameras, orbit_cameras
from ..errors import PromptError, short
from ..representation import Representation
from ..representation.gaussian import POINTS_MIN_OPACITY, opaque_centres
from ..fileio import json_safe, write_json
from ..rundir import RunView, find_run, load_view
from .clip_eval import bundled_evaluator, run_r_precision
from .grammar import WorldObject, is_world_prompt, parse_prompt, vocabulary
from .raycast import render_world, sample_surface

#: opacity above which a Gaussian's centre counts as a point of the model (Chamfer).
CHAMFER_MIN_OPACITY = POINTS_MIN_OPACITY
HELDOUT_RADIUS = 2.25
HELDOUT_FOVY = 45.0
HELDOUT_ELEVATIONS = (5.0, 30.0)


def heldout_cameras(n_views: int = 16, resolution: int = 64, device: torch.device | str = "cpu") -> Cameras:
    """The fixed evaluation cameras: two rings (see the module docstring); ``n_views >= 2``."""
    if n_views < 2:
        raise ValueError(f"n_views must be >= 2, got {n_views}")
    k1 = n_views // 2
    k2 = n_views - k1
    elev = [HELDOUT_ELEVATIONS[0]] * k1 + [HELDOUT_ELEVATIONS[1]] * k2
    azim = [360.0 * i / k1 for i in range(k1)] + [360.0 * (i + 0.5) / k2 for i in range(k2)]
    return orbit_cameras(elev, azim, HELDOUT_RADIUS, HELDOUT_FOVY, resolution, device=device)


def opposite_cameras(cameras: Cameras) -> Cameras:
    """The cameras at azimuth + 180 deg with the same elevation, radius, field of view and image size."""
    return orbit_cameras(
        cameras.elevation, cameras.azimuth + 180.0, cameras.radius, cameras.fovy, cameras.width, cameras.height,
        device=cameras.device,
    )


# ----------------------------------------------------------------------------------------- image metrics
def _silhouette_counts(alpha: Tensor, gt_mask: Tensor, threshold: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Per view [B]: ``|A & G|``, ``|A|`` and ``|G|`` of ``A = alpha > threshold`` and ``G = gt_mask > threshold``."""
    a = alpha.reshape(alpha.shape[0], -1) > threshold
    g = gt_mask.reshape(gt_mask.shape[0], -1) > threshold
    return (a & g).sum(-1).float(), a.sum(-1).float(), g.sum(-1).float()


def silhouette_iou(alpha: Tensor, gt_mask: Tensor, threshold: float = 0.5) -> Tensor:
    """Per-view IoU [B] of ``alpha > threshold`` and ``gt_mask > threshold`` ([B, H, W, 1] each); views where
    both are empty score 1."""
    inter, na, ng = _silhouette_counts(alpha, gt_mask, threshold)
    union = na + ng - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def silhouette_precision_recall(alpha: Tensor, gt_mask: Tensor, threshold: float = 0.5) -> Tuple[Tensor, Tensor]:
    """Per-view [B] precision (``|A & G| / |A|``) and recall (``|A & G| / |G|``) of ``A = alpha > threshold``
    against ``G = gt_mask > threshold``; an empty ``A`` (or ``G``) scores 1 on its side when the other is empty
    too, else 0 (nothing drawn covers nothing; a drawing of nothing has no precision to speak of)."""
    inter, na, ng = _silhouette_counts(alpha, gt_mask, threshold)
    both_empty = ((na == 0) & (ng == 0)).float()
    precision = torch.where(na > 0, inter / na.clamp_min(1), both_empty)
    recall = torch.where(ng > 0, inter / ng.clamp_min(1), both_empty)
    return precision, recall


def psnr_foreground(rgb: Tensor, gt_rgb: Tensor, gt_mask: Tensor, threshold: float = 0.5) -> float:
    """PSNR (dB) over the pixels where ``gt_mask > threshold``, pooled over views and channels (max 100)."""
    m = (gt_mask > threshold).expand_as(gt_rgb)
    if not bool(m.any()):
        return float("nan")
    mse = float(((rgb.float() - gt_rgb.float()) ** 2)[m].mean())
    return min(100.0, -10.0 * math.log10(max(mse, 1e-10)))


def depth_error(depth: Tensor, alpha: Tensor, gt_depth: Tensor, gt_mask: Tensor, threshold: float = 0.5) -> Optional[float]:
    """Mean ``|depth - gt_depth|`` over pixels inside both masks (None if there are none)."""
    m = (alpha > threshold) & (gt_mask > threshold)
    if not bool(m.any()):
        return None
    return float((depth.float() - gt_depth.float()).abs()[m].mean())


def chamfer_distance(a: Tensor, b: Tensor, chunk: int = 4096) -> Tuple[float, float]:
    """Mean nearest-neighbour distance ``a -> b`` and ``b -> a`` for point sets [N, 3] and [M, 3]."""

    def one_way(x: Tensor, y: Tensor) -> float:
        mins = [torch.cdist(x[i : i + chunk], y).amin(dim=1) for i in range(0, x.shape[0], chunk)]
        return float(torch.cat(mins).mean())

    a, b = a.float(), b.float().to(a.device)
    return one_way(a, b), one_way(b, a)


def janus_score(rgb: Tensor, gt_own: Tensor, gt_opposite: Tensor, region: Tensor) -> Tuple[float, Tensor]:
    """Fraction of views closer to the opposite side's image than to their own.

    Args:
        rgb, gt_own, gt_opposite: [B, H, W, 3] the renders, their ground truth, the ground truth from the
            opposite cameras.
        region: [B, H, W, 1] bool, the pixels compared (the union of the two ground-truth masks).

    Returns:
        (score, [B] bool per view: closer to the opposite side).
    """
    m = region.expand_as(rgb).float()
    denom = m.sum(dim=(1, 2, 3)).clamp_min(1.0)
    own = (((rgb - gt_own) ** 2) * m).sum(dim=(1, 2, 3)) / denom
    opp = (((rgb - gt_opposite) ** 2) * m).sum(dim=(1, 2, 3)) / denom
    flipped = opp < own
    return float(flipped.float().mean()) if flipped.numel() else float("nan"), flipped


# ----------------------------------------------------------------------------------------- model metrics
#: render_fn(cameras, background [B, 3]) -> (rgb [B,H,W,3], alpha [B,H,W,1], depth [B,H,W,1]), no gradients
RenderFn = Callable[[Cameras, Tensor], Tuple[Tensor, Tensor, Tensor]]


def evaluate_model(
    render_fn: RenderFn,
    points: Tensor,
    obj: WorldObject,
    device: torch.device | str,
    n_views: int = 16,
    resolution: int = 64,
    supersample: int = 2,
    n_surface: int = 8192,
    max_points: int = 20000,
    front_half_angle: float = 45.0,
) -> Dict[str, Any]:
    """All metrics of the module docstring for any model, given its renderer and its points.

    ``points`` [N, 3] are the model's points for Chamfer (the centres of opaque Gaussians, the dense cells
    of a NeRF); at most ``max_points`` of them (a fixed random subset) and ``n_surface`` surface samples.
    """
    dev = torch.device(device)
    cams = heldout_cameras(n_views, resolution, device=dev)
    gt = render_world(obj, cams, supersample=supersample)
    white = torch.ones(len(cams), 3, device=dev)
    with torch.no_grad():
        rgb, alpha, depth = render_fn(cams, white)
    rgb, alpha, depth = rgb.float().clamp(0, 1), alpha.float(), depth.float()
    precision, recall = silhouette_precision_recall(alpha, gt["mask"])

    result: Dict[str, Any] = {
        "caption": obj.caption,
        "kind": obj.kind,
        "colour": obj.colour,
        "seed": obj.seed,
        "n_views": len(cams),
        "resolution": resolution,
        "iou": float(silhouette_iou(alpha, gt["mask"]).mean()),
        "silhouette_precision": float(precision.mean()),
        "silhouette_recall": float(recall.mean()),
        "psnr_fg": psnr_foreground(rgb, gt["rgb"], gt["mask"]),
        "depth_abs_err": depth_error(depth, alpha, gt["depth"], gt["mask"]),
    }

    centres = points.detach().float().to(dev)
    g = torch.Generator().manual_seed(0)
    if centres.shape[0] > max_points:
        centres = centres[torch.randperm(centres.shape[0], generator=g)[:max_points].to(dev)]
    surface = sample_surface(obj, n_surface, g).to(dev)
    result["chamfer_points"] = int(centres.shape[0])
    if centres.shape[0] > 0:
        acc, comp = chamfer_distance(centres, surface)
        result.update(chamfer=0.5 * (acc + comp), chamfer_acc=acc, chamfer_comp=comp)
    else:
        result.update(chamfer=None, chamfer_acc=None, chamfer_comp=None)

    if obj.has_front_back:
        az = cams.azimuth.abs()
        sel = ((az <= front_half_angle) | (az >= 180.0 - front_half_angle)).nonzero().squeeze(-1).tolist()
        sub = cams[sel]
        gt_opp = render_world(obj, opposite_cameras(sub), supersample=supersample)
        region = (gt["mask"][sel] > 0.5) | (gt_opp["mask"] > 0.5)
        score, _ = janus_score(rgb[sel], gt["rgb"][sel], gt_opp["rgb"], region)
        result.update(janus=score, janus_views=len(sel))
    else:
        result.update(janus=None, janus_views=0)
    return result


def _gaussian_render_fn(model, backend: str) -> RenderFn:
    from ..render import render

    def fn(cams: Cameras, bg: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        out = render(model, cams, bg, backend=backend)
        return out.rgb, out.alpha, out.depth

    return fn


def evaluate_gaussians(
    model,
    obj: WorldObject,
    n_views: int = 16,
    resolution: int = 64,
    backend: str = "torch",
    supersample: int = 2,
    n_surface: int = 8192,
    max_centres: int = 20000,
    front_half_angle: float = 45.0,
) -> Dict[str, Any]:
    """All metrics of the module docstring for a :class:`~splatgen.gaussians.GaussianModel` against ``obj``.

    Renders on the model's device with ``backend`` (``'torch'``, ``'gsplat'`` or ``'auto'``). Chamfer uses
    the centres of Gaussians with opacity > :data:`CHAMFER_MIN_OPACITY`.
    """
    result = evaluate_model(_gaussian_render_fn(model, backend), opaque_centres(model), obj, model.device, n_views, resolution,
                            supersample, n_surface, max_centres, front_half_angle)
    return {**result, "num_gaussians": len(model)}


def evaluate_representation(rep: Representation, obj: WorldObject, n_views: int = 16, resolution: int = 64,
                            r_precision: bool = False) -> Dict[str, Any]:
    """Metrics of a trainer's :class:`~splatgen.representation.Representation` (Gaussians or NeRF), plus the
    evaluator's R-precision of its renders when ``r_precision`` (the same held-out renders when the evaluator's
    input size is ``resolution``: they are rendered once)."""
    render_fn = _render_once(rep.render_eval)
    result = evaluate_model(render_fn, rep.points(), obj, rep.device, n_views, resolution)
    result.update({rep.size_name: rep.size(), "num_elements": rep.size()})
    if r_precision:
        result["r_precision"] = render_r_precision(render_fn, obj.caption, n_views, rep.device)
    return result


def _render_once(render_fn: RenderFn) -> RenderFn:
    """``render_fn`` remembering its last output, for a second call with the same cameras and background."""
    last: Dict[str, Any] = {}

    def fn(cams: Cameras, bg: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        key = (cams.width, cams.height, cams.viewmats.cpu().numpy().tobytes(), cams.Ks.cpu().numpy().tobytes(),
               bg.cpu().numpy().tobytes())
        if last.get("key") != key:
            last["key"], last["out"] = key, render_fn(cams, bg)
        return last["out"]

    return fn


def evaluate_run(
    run: str | Path | RunView,
    n_views: int = 16,
    resolution: int = 64,
    device: torch.device | str = "auto",
    backend: str = "auto",
) -> Dict[str, Any]:
    """Evaluate a run against the object of its prompt (``config.yaml``, key ``prompt``), write
    ``metrics.json`` into the run folder and return its content.

    ``run`` is a run folder (found by :func:`splatgen.rundir.find_run`: a finished run, or an interrupted one,
    whose saved model is evaluated with a warning) or a :class:`~splatgen.rundir.RunView`. ``device='auto'``
    evaluates on CUDA when available (gsplat there with ``backend='auto'``), else the CPU. Non-finite numbers
    are written as ``null``.

    Raises:
        PromptError: the run's prompt is not a prompt of the procedural world.
        NotARunError: ``run`` is not a run folder, or has no model to evaluate.
    """
    view = run if isinstance(run, RunView) else find_run(run)
    if view.note:
        warnings.warn(view.note, UserWarning, stacklevel=2)
    prompt = view.cfg.prompt
    if not is_world_prompt(prompt):
        raise PromptError(f"the run's prompt {short(prompt)} is not a prompt of the procedural world, so it has no ground "
                          f"truth to evaluate against; {vocabulary()}")
    obj = parse_prompt(prompt)
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    rep = load_view(view, device, backend)
    metrics = {"prompt": prompt, "representation": rep.kind,
               **({} if view.finished else {"interrupted": True, "model": view.model.name}),
               **evaluate_representation(rep, obj, n_views, resolution, r_precision=True)}
    write_json(view.folder / "metrics.json", metrics)
    return json_safe(metrics)


def world_evaluator(prompt: str, n_views: int = 16, resolution: int = 64) -> Optional[Callable[[Representation], Dict[str, Any]]]:
    """The trainer's periodic evaluator for a world prompt (ground-truth metrics and R-precision of the current
    model), or None when ``prompt`` is not of the world."""
    if not is_world_prompt(prompt):
        return None
    obj = parse_prompt(prompt)

    def evaluate(rep: Representation) -> Dict[str, Any]:
        return evaluate_representation(rep, obj, n_views, resolution, r_precision=True)

    return evaluate


def render_r_precision(render_fn: RenderFn, caption: str, n_views: int = 16,
                       device: torch.device | str = "cpu") -> Optional[float]:
    """Evaluator-CLIP R-precision of a model's held-out renders for ``caption`` (a world caption): the
    fraction of views whose nearest caption among all of the world's (same view direction) is the true one.

    ``render_fn`` renders the model (see :data:`RenderFn`). Uses the evaluator shipped with the bundled prior
    (``splatgen/assets/prior/evaluator_clip``, trained apart from the prior, loaded once per device); None
    when it is not installed. Renders at the evaluator's 64 px on white.
    """
    evaluator = bundled_evaluator(str(torch.device(device)))
    if evaluator is None:
        return None
    cams = heldout_cameras(n_views, evaluator.image_size, device=device)
    with torch.no_grad():
        rgb, _, _ = render_fn(cams, torch.ones(len(cams), 3, device=device))
    return run_r_precision(evaluator, rgb.permute(0, 3, 1, 2).clamp(0, 1), caption, cams.directions)
