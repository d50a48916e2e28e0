"""Gaussian model layout, optimizer state through densification, and the PyTorch densification reference."""

import dataclasses
import math

import pytest
import torch

from splatgen.config import DensifyConfig
from splatgen.densify import (
    DensifyParams, DensifyStats, accumulate_stats, apply_densify, densify_decisions, densify_step,
)
from splatgen.gaussians import GaussianModel, quat_to_rotmat

LRS = dict(means=1e-2, scales=1e-2, quats=1e-2, opacities=1e-2, sh0=1e-2, shN=1e-2)


def stepped_model(n=50, seed=0, sh_degree=1):
    m = GaussianModel.init_ball(n, 0.5, sh_degree=sh_degree, generator=torch.Generator().manual_seed(seed))
    m.create_optimizer(LRS)
    loss = sum((p.float() ** 2).sum() for p in m.params.values())
    loss.backward()
    m.optimizer.step()
    m.optimizer.zero_grad()
    return m


def test_init_ball_layout_and_determinism():
    a = GaussianModel.init_ball(500, 0.7, sh_degree=2, generator=torch.Generator().manual_seed(1))
    b = GaussianModel.init_ball(500, 0.7, sh_degree=2, generator=torch.Generator().manual_seed(1))
    assert a.means.shape == (500, 3) and a.params["quats"].shape == (500, 4)
    assert a.params["sh0"].shape == (500, 1, 3) and a.params["shN"].shape == (500, 8, 3)
    assert a.params["opacities"].shape == (500,)
    assert float(a.means.detach().norm(dim=-1).max()) <= 0.7 + 1e-6
    assert torch.equal(a.means, b.means)
    assert torch.allclose(a.get_opacities(), torch.full((500,), 0.1), atol=1e-6)


def test_keep_moves_optimizer_state():
    m = stepped_model()
    before = {k: m.optimizer.state[m.params[k]]["exp_avg"].clone() for k in m.params}
    mask = torch.arange(50) % 3 == 0
    m.keep(mask)
    assert len(m) == int(mask.sum())
    for k in m.params:
        st = m.optimizer.state[m.params[k]]
        assert torch.equal(st["exp_avg"], before[k][mask])
        assert st["exp_avg"].shape == m.params[k].shape
    # The optimizer still steps the new tensors.
    old = m.means.detach().clone()
    m.means.sum().backward()
    m.optimizer.step()
    assert not torch.equal(old, m.means.detach())


def test_append_zero_state():
    m = stepped_model(10)
    new = {k: v.detach()[:3].clone() for k, v in m.params.items()}
    m.append(new)
    assert len(m) == 13
    st = m.optimizer.state[m.params["scales"]]
    assert torch.all(st["exp_avg"][10:] == 0) and torch.any(st["exp_avg"][:10] != 0)


def test_reset_opacities():
    m = stepped_model(10)
    with torch.no_grad():
        m.params["opacities"].fill_(3.0)
    m.reset_opacities(0.05)
    assert torch.allclose(m.get_opacities(), torch.full((10,), 0.05), atol=1e-6)


def test_accumulate_stats_normalises_and_masks():
    stats = DensifyStats.zeros(3)
    grad = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], [[0.0, 2.0], [0.0, 0.0], [1.0, 1.0]]])
    radii = torch.tensor([[4, 2, 0], [8, 0, 0]], dtype=torch.int32)
    accumulate_stats(stats, grad, radii, width=20, height=10)
    # view 0: |(1*10, 0)| = 10; view 1: |(0, 2*5)| = 10 -> sum 20 over 2 views
    assert torch.allclose(stats.grad2d_sum, torch.tensor([20.0, 5.0, 0.0]))
    assert torch.equal(stats.count, torch.tensor([2.0, 1.0, 0.0]))
    assert torch.allclose(stats.max_radii, torch.tensor([8 / 20, 2 / 20, 0.0]))


def test_decisions_rules():
    p = DensifyParams(grad_threshold=1.0, dense_scale=0.1, scene_extent=1.0, min_opacity=0.1,
                      max_world_scale=0.5, max_screen_fraction=0.3, max_gaussians=100)
    n = 6
    stats = DensifyStats(torch.tensor([4.0, 4.0, 0.5, 4.0, 4.0, 4.0]), torch.tensor([2.0, 2.0, 1.0, 0.0, 2.0, 2.0]),
                         torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, 0.0]))
    scales = torch.log(torch.tensor([0.05, 0.3, 0.05, 0.05, 0.05, 0.9]))[:, None].expand(n, 3).clone()
    opac = torch.logit(torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5]))
    m = densify_decisions(stats, scales, opac, p)
    assert m["clone"].tolist() == [True, False, False, False, False, False]  # small & high grad
    assert m["split"].tolist() == [False, True, False, False, False, False]  # large & high grad
    # low opacity -> prune; too big on screen (4) or in world (5) -> prune, and pruned never grow
    opac2 = opac.clone()
    opac2[2] = torch.logit(torch.tensor(0.05))
    m = densify_decisions(stats, scales, opac2, p)
    assert m["prune"].tolist() == [False, False, True, False, True, True]
    assert not bool((m["prune"] & (m["clone"] | m["split"])).any())


def test_cap_keeps_largest_gradients():
    n = 10
    p = DensifyParams(grad_threshold=0.5, dense_scale=1.0, max_gaussians=13, min_opacity=0.0, max_screen_fraction=0)
    g = torch.arange(n, dtype=torch.float32)  # Gaussians 1..9 exceed the threshold
    stats = DensifyStats(g, torch.ones(n), torch.zeros(n))
    m = densify_decisions(stats, torch.full((n, 3), math.log(0.01)), torch.zeros(n), p)
    assert m["clone"].nonzero().squeeze(-1).tolist() == [7, 8, 9]


def test_apply_layout_and_state():
    m = stepped_model(8)
    p = DensifyParams(split_shrink=2.0)
    masks = {
        "clone": torch.tensor([0, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool),
        "split": torch.tensor([0, 0, 0, 1, 0, 0, 1, 0], dtype=torch.bool),
        "prune": torch.tensor([1, 0, 0, 0, 0, 0, 0, 0], dtype=torch.bool),
    }
    old = {k: v.detach().clone() for k, v in m.params.items()}
    old_state = {k: m.optimizer.state[m.params[k]]["exp_avg_sq"].clone() for k in m.params}
    counts = apply_densify(m, masks, p, torch.Generator().manual_seed(0))
    assert counts == {"cloned": 1, "split": 2, "pruned": 1, "total": 8 - 1 - 2 + 1 + 4}
    surv = [1, 2, 4, 5, 7]
    order = surv + [1] + [3, 6] + [3, 6]
    for k in ("opacities", "sh0", "quats"):
        assert torch.equal(m.params[k].detach(), old[k][order])
    assert torch.allclose(m.params["scales"].detach()[6:], old["scales"][[3, 6, 3, 6]] - math.log(2.0))
    for k in m.params:
        st = m.optimizer.state[m.params[k]]["exp_avg_sq"]
        assert torch.equal(st[:6], old_state[k][surv + [1]])
        assert torch.all(st[6:] == 0)


def test_split_children_follow_parent_covariance():
    n = 1
    q = torch.nn.functional.normalize(torch.tensor([[0.9, 0.1, -0.3, 0.2]]), dim=-1)
    s = torch.tensor([[0.3, 0.05, 0.1]])
    m = GaussianModel({"means": torch.tensor([[0.2, -0.1, 0.4]]), "scales": s.log(), "quats": q,
                       "opacities": torch.zeros(1), "sh0": torch.zeros(1, 1, 3), "shN": torch.zeros(1, 0, 3)}, 0)
    m.create_optimizer(LRS)
    k = 4000
    m.keep(torch.zeros(k, dtype=torch.long))  # k copies of the one parent
    stats = DensifyStats(torch.ones(k), torch.ones(k), torch.zeros(k))
    counts = densify_step(m, stats, DensifyParams(grad_threshold=0.5, dense_scale=0.01, max_gaussians=10 * k,
                                                  min_opacity=0.0, max_world_scale=10.0), torch.Generator().manual_seed(0))
    assert counts["split"] == k and len(m) == 2 * k
    offsets = m.means.detach() - torch.tensor([0.2, -0.1, 0.4])
    R = quat_to_rotmat(q)[0]
    whitened = (offsets @ R) / s  # should be standard normal
    assert whitened.mean(0).abs().max() < 4 / math.sqrt(2 * k) * 3  # ~ 3 sigma of the sample mean
    cov = torch.cov(whitened.T)
    assert torch.allclose(cov, torch.eye(3), atol=0.1)


def test_quat_to_rotmat_matches_axis_angle():
    ang = 0.7
    q = torch.tensor([[math.cos(ang / 2), 0.0, 0.0, math.sin(ang / 2)]])  # about z
    R = quat_to_rotmat(q)[0]
    expected = torch.tensor([[math.cos(ang), -math.sin(ang), 0], [math.sin(ang), math.cos(ang), 0], [0, 0, 1.0]])
    assert torch.allclose(R, expected, atol=1e-6)


def test_densify_params_are_the_configs_settings_with_its_defaults():
    """DensifyParams is the part of the ``densify`` section one step needs: each field is a DensifyConfig
    setting of that name with its default, written once (in the config)."""
    settings = {f.name: f for f in dataclasses.fields(DensifyConfig)}
    for f in dataclasses.fields(DensifyParams):
        assert f.name in settings, f"DensifyParams.{f.name} is no densify setting"
        assert f.default == settings[f.name].default, f.name
    assert DensifyParams.from_config(DensifyConfig()) == DensifyParams()
