"""gsplat 1.5.3 ``DefaultStrategy``'s grow and prune rules, next to splatgen's, for the same statistics.

Used by the kernel tests and by ``benchmarks/kernels/bench_densify.py``. Three pieces:

- :func:`gsplat_expected_rows` writes out, from ``gsplat/strategy/default.py`` (``_grow_gs`` then
  ``_prune_gs``) and ``gsplat/strategy/ops.py`` (``duplicate``, ``split``, ``remove``), which original
  Gaussian each row of gsplat's result comes from, and in which role.
- :func:`run_gsplat` runs gsplat's own ``_grow_gs`` + ``_prune_gs`` on a copy of the model with an extra
  non-trainable ``ids`` parameter, so the result says where every row came from. The tests check that
  the two agree row for row: the written-out rules *are* gsplat's.
- :func:`compare_fates` puts both sets of decisions side by side per original Gaussian and sorts the
  disagreements into the known reasons (see :data:`REASONS`).

Where the rules differ, with gsplat's thresholds mapped onto splatgen's (``grow_grad2d = grad_threshold``,
``grow_scale3d = dense_scale``, ``prune_opa = min_opacity``, ``prune_scale3d = max_world_scale``,
``scene_scale = scene_extent``):

1. *Grow, then prune* (gsplat) versus *prune wins* (splatgen). gsplat first duplicates / splits every
   Gaussian with a high gradient, then prunes the result. A Gaussian that is both too large and has a high
   gradient is split by gsplat into children 1.6 times smaller, which survive the scale pruning when
   ``max_scale / 1.6 <= prune_scale3d``; splatgen prunes it (its docstring: "a pruned Gaussian never
   grows"). For transparent Gaussians both end up removed (children inherit the opacity).
2. *Screen-size rule.* splatgen prunes when the largest screen radius since the last densification exceeds
   ``max_screen_fraction`` of the image side. gsplat prunes by screen size (``prune_scale2d``) and splits by
   it (``grow_scale2d``) only while ``step < refine_scale2d_stop_iter``, which is 0 (off) by default,
   following the official 3DGS code in which the rule never fires.
3. *When.* gsplat prunes by world scale only when ``step > reset_every`` (3000 by default); splatgen always.
4. *Cap.* splatgen never grows beyond ``max_gaussians`` (largest gradients win); gsplat has no cap.
5. Not decisions, but the same step: gsplat gives duplicates zero Adam moments, splatgen copies them; and
   gsplat accumulates ``||grad * (W/2, H/2) * n_cameras||`` counting a view when both per-axis radii are
   > 0, splatgen ``||grad * (W/2, H/2)||`` with ``radii > 0``: for the same renders gsplat's ``grad2d`` is
   B times splatgen's ``grad2d_sum`` (it undoes the mean over cameras of its loss), so its 2e-4 default
   threshold corresponds to 2e-4 / B here, on top of the photo-versus-SDS scale difference.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor

ROLE_ORIGINAL, ROLE_DUPLICATE, ROLE_CHILD0, ROLE_CHILD1 = 0, 1, 2, 3
REASONS = ("grown_before_pruned", "screen_size", "cap", "other")


def make_strategy(p, step_after_reset: bool = True, **overrides):
    """A ``DefaultStrategy`` with splatgen's thresholds (``p`` a ``DensifyParams``)."""
    from gsplat.strategy import DefaultStrategy

    kw = dict(
        prune_opa=p.min_opacity, grow_grad2d=p.grad_threshold, grow_scale3d=p.dense_scale,
        prune_scale3d=p.max_world_scale, refine_scale2d_stop_iter=0, refine_start_iter=0, refine_every=1,
        reset_every=1 if step_after_reset else 10**9,
    )
    kw.update(overrides)
    return DefaultStrategy(**kw)


def gsplat_expected_rows(
    grad2d: Tensor, count: Tensor, radii: Tensor, scales: Tensor, opacities: Tensor, strategy, scene_scale: float, step: int
) -> Tuple[Tensor, Tensor]:
    """Original index [M] and role [M] of each row gsplat's ``_grow_gs`` + ``_prune_gs`` leave, in order."""
    s = strategy
    n = grad2d.shape[0]
    device = grad2d.device
    grads = grad2d / count.clamp_min(1)
    is_grad_high = grads > s.grow_grad2d
    is_small = torch.exp(scales).max(dim=-1).values <= s.grow_scale3d * scene_scale
    is_dupli = is_grad_high & is_small
    is_split = is_grad_high & ~is_small
    if step < s.refine_scale2d_stop_iter:
        is_split |= radii > s.grow_scale2d
    # duplicate: append copies of the duplicated rows (never split afterwards)
    dup = torch.where(is_dupli)[0]
    ids = torch.cat([torch.arange(n, device=device), dup])
    role = torch.cat([torch.full((n,), ROLE_ORIGINAL, device=device), torch.full_like(dup, ROLE_DUPLICATE)])
    sc = torch.cat([scales, scales[dup]])
    op = torch.cat([opacities, opacities[dup]])
    rd = torch.cat([radii, radii[dup]])
    split_mask = torch.cat([is_split, torch.zeros_like(dup, dtype=torch.bool)])
    # split: rest, then all first children, then all second children; children scales log(exp(s) / 1.6)
    sel, rest = torch.where(split_mask)[0], torch.where(~split_mask)[0]
    child_scales = torch.log(torch.exp(sc[sel]) / 1.6)
    ids = torch.cat([ids[rest], ids[sel], ids[sel]])
    role = torch.cat([role[rest], torch.full_like(sel, ROLE_CHILD0), torch.full_like(sel, ROLE_CHILD1)])
    sc = torch.cat([sc[rest], child_scales, child_scales])
    op = torch.cat([op[rest], op[sel], op[sel]])
    rd = torch.cat([rd[rest], rd[sel], rd[sel]])
    # prune
    is_prune = torch.sigmoid(op.flatten()) < s.prune_opa
    if step > s.reset_every:
        too_big = torch.exp(sc).max(dim=-1).values > s.prune_scale3d * scene_scale
        if step < s.refine_scale2d_stop_iter:
            too_big |= rd > s.prune_scale2d
        is_prune = is_prune | too_big
    return ids[~is_prune], role[~is_prune]


@torch.no_grad()
def run_gsplat(model_params: Dict[str, Tensor], grad2d: Tensor, count: Tensor, radii: Tensor, strategy, scene_scale: float, step: int) -> Tensor:
    """Run gsplat's own ``_grow_gs`` and ``_prune_gs``; returns the original index of every resulting row."""
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.detach().clone()) for k, v in model_params.items()})
    n = grad2d.shape[0]
    # float64 holds every index below 2^53 exactly; not trainable, so gsplat moves it without an optimizer
    params["ids"] = torch.nn.Parameter(torch.arange(n, dtype=torch.float64, device=grad2d.device), requires_grad=False)
    optimizers = {k: torch.optim.Adam([params[k]], lr=1e-3) for k in model_params}
    state = {"grad2d": grad2d.clone(), "count": count.clone(), "scene_scale": scene_scale}
    if strategy.refine_scale2d_stop_iter > 0:
        state["radii"] = radii.clone()
    strategy._grow_gs(params, optimizers, state, step)
    strategy._prune_gs(params, optimizers, state, step)
    return params["ids"].detach().round().long()


def splatgen_fates(masks: Dict[str, Tensor]) -> Tensor:
    """Per original Gaussian [N, 3]: (original kept, copies kept, children kept) under splatgen's masks."""
    clone, split, prune = masks["clone"], masks["split"], masks["prune"]
    kept = ~(prune | split)
    return torch.stack([kept.long(), clone.long(), 2 * split.long()], dim=-1)


def gsplat_fates(ids: Tensor, role: Tensor, n: int) -> Tensor:
    """Per original Gaussian [N, 3] from gsplat's rows, same columns as :func:`splatgen_fates`."""
    out = torch.zeros(n, 3, dtype=torch.long, device=ids.device)
    out[:, 0].index_add_(0, ids[role == ROLE_ORIGINAL], torch.ones_like(ids[role == ROLE_ORIGINAL]))
    out[:, 1].index_add_(0, ids[role == ROLE_DUPLICATE], torch.ones_like(ids[role == ROLE_DUPLICATE]))
    is_child = (role == ROLE_CHILD0) | (role == ROLE_CHILD1)
    out[:, 2].index_add_(0, ids[is_child], torch.ones_like(ids[is_child]))
    return out


def compare_fates(stats, scales: Tensor, opacities: Tensor, p, masks: Dict[str, Tensor], ids: Tensor, role: Tensor) -> Dict[str, object]:
    """Agreement per original Gaussian, and every disagreement assigned to one of :data:`REASONS`.

    The reasons are predicted from the rules alone (not from the outcome), so a disagreement landing in
    ``other`` is a real, unexplained difference.
    """
    n = scales.shape[0]
    ours, theirs = splatgen_fates(masks), gsplat_fates(ids, role, n)
    differ = (ours != theirs).any(dim=-1)
    avg = stats.grad2d_sum / stats.count.clamp_min(1.0)
    high = avg > p.grad_threshold
    max_scale = torch.exp(scales).amax(-1)
    small = max_scale <= p.dense_scale * p.scene_extent
    opaque = ~(torch.sigmoid(opacities) < p.min_opacity)
    too_big = max_scale > p.max_world_scale * p.scene_extent
    by_screen = (stats.max_radii > p.max_screen_fraction) if p.max_screen_fraction > 0 else torch.zeros_like(high)
    children_fit = torch.exp(torch.log(torch.exp(scales) / 1.6)).max(dim=-1).values <= p.max_world_scale * p.scene_extent
    reason = torch.full((n,), REASONS.index("other"), dtype=torch.long, device=scales.device)
    # screen first: such a Gaussian may also be too big, but then splatgen prunes it for both reasons
    grown_before_pruned = high & ~small & too_big & opaque & children_fit & ~by_screen
    reason[grown_before_pruned] = REASONS.index("grown_before_pruned")
    reason[by_screen & opaque & ~too_big] = REASONS.index("screen_size")
    reason[by_screen & opaque & too_big & high & ~small & children_fit] = REASONS.index("screen_size")
    grow_ref = high & (stats.count > 0) & ~(too_big | ~opaque | by_screen)
    capped = grow_ref & ~(masks["clone"] | masks["split"])
    reason[capped & ~by_screen] = REASONS.index("cap")
    counts = {r: int((differ & (reason == i)).sum()) for i, r in enumerate(REASONS)}
    return {
        "n": n,
        "agree": int((~differ).sum()),
        "agree_fraction": float((~differ).float().mean()) if n else 1.0,
        "disagree_by_reason": counts,
        "predicted_by_reason": {r: int((reason == i).sum()) for i, r in enumerate(REASONS) if r != "other"},
        "differ_mask": differ,
        "reason": reason,
    }


def mapped_thresholds_note() -> str:
    return (
        "gsplat DefaultStrategy(prune_opa=min_opacity, grow_grad2d=grad_threshold, grow_scale3d=dense_scale, "
        "prune_scale3d=max_world_scale, refine_scale2d_stop_iter=0), step > reset_every, scene_scale=scene_extent"
    )

