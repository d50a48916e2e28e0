"""Timestep, resolution, SH-degree and densification-window schedules."""

import math

import pytest
import torch

from splatgen import schedules
from splatgen.config import ScheduleConfig


def sd_alphas_cumprod(T: int = 1000) -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def brute_force_tp(abar, i, N, m1=800, m2=500, s1=300, s2=100, lo=20, hi=980, use_wd=True):
    """DreamTime's formula written out term by term (REFERENCE.md section 2)."""
    p = []
    for t in range(len(abar)):
        if t < lo or t > hi:
            p.append(0.0)
            continue
        wp = math.exp(-((t - m1) ** 2) / (2 * s1**2)) if t > m1 else (1.0 if t >= m2 else math.exp(-((t - m2) ** 2) / (2 * s2**2)))
        wd = math.sqrt((1 - float(abar[t])) / float(abar[t])) if use_wd else 1.0
        p.append(wp * wd)
    z = sum(p)
    p = [x / z for x in p]
    best, best_err = None, math.inf
    for t in range(lo, hi + 1):
        err = abs(sum(p[t:]) - i / N)
        if err < best_err - 1e-15 or (abs(err - best_err) <= 1e-15 and t > best):
            best, best_err = t, err
    return best


@pytest.mark.parametrize("use_wd", [True, False])
def test_tp_sds_matches_formula(use_wd):
    abar = sd_alphas_cumprod()
    sched = schedules.TimestepSchedule(ScheduleConfig(tp_use_wd=use_wd), abar, 200)
    for i in (0, 1, 37, 100, 150, 199):
        assert sched.tp_table()[i] == brute_force_tp(abar, i, 200, use_wd=use_wd)


def test_tp_sds_reference_midpoints():
    # REFERENCE.md: with W_d, t stays near 833 at half the run; without, near 673.
    abar = sd_alphas_cumprod()
    with_wd = schedules.TimestepSchedule(ScheduleConfig(tp_use_wd=True), abar, 1000).tp_table()
    without = schedules.TimestepSchedule(ScheduleConfig(tp_use_wd=False), abar, 1000).tp_table()
    assert abs(with_wd[500] - 833) <= 3 and abs(without[500] - 673) <= 3
    assert all(a >= b for a, b in zip(with_wd, with_wd[1:])), "TP-SDS must be non-increasing"
    assert with_wd[0] == 980 and 20 <= with_wd[-1] < 400


def test_tp_prior_normalised_and_supported():
    abar = sd_alphas_cumprod()
    p = schedules.tp_sds_prior(abar, 20, 980)
    assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-9)
    assert float(p[:20].sum()) == 0.0 and float(p[981:].sum()) == 0.0


def test_prior_scales_to_other_T():
    abar = sd_alphas_cumprod(500)
    s = schedules.TimestepSchedule(ScheduleConfig(), abar, 100)
    table = s.tp_table()
    assert table[0] == round(0.98 * 500) and all(0 <= t < 500 for t in table)


def test_uniform_in_range_and_seeded():
    abar = sd_alphas_cumprod()
    s = schedules.TimestepSchedule(ScheduleConfig(timestep="uniform"), abar, 100)
    a = s(0, 1000, torch.Generator().manual_seed(0))
    b = s(0, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert int(a.min()) >= 20 and int(a.max()) <= 980 and len(set(a.tolist())) > 500


def test_linear_and_step():
    abar = sd_alphas_cumprod()
    lin = schedules.TimestepSchedule(ScheduleConfig(timestep="linear"), abar, 11)
    g = torch.Generator()
    assert int(lin(0, 1, g)) == 980 and int(lin(10, 1, g)) == 20 and int(lin(5, 1, g)) == 500
    st = schedules.TimestepSchedule(ScheduleConfig(timestep="step", step_at=0.5, step_t_max_end=0.55), abar, 100)
    early = st(10, 2000, torch.Generator().manual_seed(1))
    late = st(60, 2000, torch.Generator().manual_seed(1))
    assert int(early.max()) > 900 and int(late.max()) <= 550


def test_jitter_gives_per_view_timesteps():
    abar = sd_alphas_cumprod()
    s = schedules.TimestepSchedule(ScheduleConfig(tp_jitter=0.05), abar, 100)
    t = s(50, 8, torch.Generator().manual_seed(0))
    centre = s.tp_table()[50]
    assert len(set(t.tolist())) > 1 and int((t - centre).abs().max()) <= 50


def test_resolution_and_sh_milestones():
    m = [[0.3, 128], [0.6, 256]]
    assert schedules.resolution_at(0, 100, 64, m) == 64
    assert schedules.resolution_at(29, 100, 64, m) == 64
    assert schedules.resolution_at(30, 100, 64, m) == 128
    assert schedules.resolution_at(99, 100, 64, m) == 256
    assert schedules.sh_degree_at(0, 100, 3, [0.2, 0.4, 0.6]) == 0
    assert schedules.sh_degree_at(45, 100, 3, [0.2, 0.4, 0.6]) == 2
    assert schedules.sh_degree_at(0, 100, 2, []) == 2


def test_guidance_scale_milestones():
    m = [[0.5, 3.5], [0.8, 2.0]]
    assert schedules.milestone_value(0, 250, 5.0, m) == 5.0
    assert schedules.milestone_value(124, 250, 5.0, m) == 5.0
    assert schedules.milestone_value(125, 250, 5.0, m) == 3.5
    assert schedules.milestone_value(249, 250, 5.0, m) == 2.0
    assert schedules.milestone_value(249, 250, 5.0, []) == 5.0


def test_densify_window():
    hits = [s for s in range(100) if schedules.in_densify_window(s, 100, 0.1, 0.5, 10)]
    assert hits == [19, 29, 39, 49]


def test_means_lr_decay():
    assert math.isclose(schedules.means_lr_at(0, 100, 1e-3, 1e-5), 1e-3)
    assert math.isclose(schedules.means_lr_at(99, 100, 1e-3, 1e-5), 1e-5)
    mid = schedules.means_lr_at(49, 100, 1e-3, 1e-5)
    assert 1e-5 < mid < 1e-3


def test_each_weighting_is_its_formula():
    """The table ``sds.WEIGHTINGS`` (``guidance.weighting``) gives DreamFusion's, the flat, the SNR-style and
    DreamTime's w(t), and one clear error where the prior is missing or the name unknown."""
    from splatgen.sds import sds_weight

    abar = sd_alphas_cumprod().float()
    t = torch.tensor([20, 500, 980])
    a = abar[t]
    torch.testing.assert_close(sds_weight(t, abar, "sds"), 1.0 - a)
    torch.testing.assert_close(sds_weight(t, abar, "uniform"), torch.ones(3))
    torch.testing.assert_close(sds_weight(t, abar, "snr"), a.sqrt() * (1.0 - a))
    prior = schedules.tp_sds_prior(abar.double(), 20, 980).float()
    torch.testing.assert_close(sds_weight(t, abar, "dreamtime", prior), prior[t] / prior[prior > 0].mean())
    with pytest.raises(ValueError, match="needs the TP-SDS prior"):
        sds_weight(t, abar, "dreamtime")
    with pytest.raises(ValueError, match=r"unknown SDS weighting 'nope'; choose one of \['sds', 'uniform', 'snr', 'dreamtime'\]"):
        sds_weight(t, abar, "nope")


def test_ramp_rises_linearly_over_its_fraction_then_stays_at_one():
    from splatgen.schedules import ramp_at

    assert [ramp_at(s, 100, 0.5) for s in (0, 25, 50, 99)] == [0.0, 0.5, 1.0, 1.0]
    assert ramp_at(0, 100, 0.0) == 1.0


def test_densify_interval_stretches_only_runs_longer_than_the_reference():
    assert schedules.densify_interval(50, 200, 200) == 50
    assert schedules.densify_interval(50, 120, 200) == 50  # shorter runs keep the interval
    assert schedules.densify_interval(50, 500, 200) == 125
    assert schedules.densify_interval(50, 300, 200) == 75
    assert schedules.densify_interval(50, 500, 0) == 50  # 0: steps whatever the length
    assert schedules.densify_interval(0, 500, 200) == 0  # an off setting stays off


@pytest.mark.parametrize("steps", [200, 300, 500, 1000])
def test_a_stretched_interval_densifies_as_often_as_the_reference_run(steps):
    every = schedules.densify_interval(50, steps, 200)
    events = [s for s in range(steps) if schedules.in_densify_window(s, steps, 0.1, 0.7, every)]
    assert len(events) == 2
    fixed = [s for s in range(steps) if schedules.in_densify_window(s, steps, 0.1, 0.7, 50)]
    assert len(fixed) == int(0.6 * steps) // 50
