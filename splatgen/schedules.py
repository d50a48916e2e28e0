"""Coarse-to-fine schedules: plain functions of the step.

Timesteps (fractions and integers refer to the T training timesteps of the diffusion model):

- ``tp-sds``: DreamTime's time-prioritized schedule (arXiv 2306.12422). A prior over timesteps
  ``p(t) ∝ W_d(t) W_p(t)`` on ``[t_min, t_max]`` with ``W_d = sqrt((1 - abar_t) / abar_t)`` (optional) and
  ``W_p`` flat on ``[m2, m1]`` with Gaussian tails of widths ``s1`` above and ``s2`` below; iteration i of N
  uses the non-increasing ``t(i) = argmin_t |sum_{t' >= t} p(t') - i/N|``.
- ``uniform``: t ~ U[t_min, t_max] per view (DreamFusion, threestudio).
- ``linear``: t = t_max - (t_max - t_min) i/N (DreamGaussian's annealing).
- ``step``: t ~ U[t_min, t_max], with t_max dropping to ``step_t_max_end`` at ``step_at`` of the run
  (GaussianDreamer).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from .config import ScheduleConfig


def tp_sds_prior(
    alphas_cumprod: Tensor,
    t_min: int,
    t_max: int,
    m1: float = 800.0,
    m2: float = 500.0,
    s1: float = 300.0,
    s2: float = 100.0,
    use_wd: bool = True,
) -> Tensor:
    """p(t) [T] (float64), zero outside ``[t_min, t_max]``, summing to 1.

    ``m1, m2, s1, s2`` are given for T = 1000 and scaled to the model's T.
    """
    T = alphas_cumprod.shape[0]
    scale = T / 1000.0
    m1, m2, s1, s2 = m1 * scale, m2 * scale, s1 * scale, s2 * scale
    t = torch.arange(T, dtype=torch.float64)
    wp = torch.ones(T, dtype=torch.float64)
    hi, lo = t > m1, t < m2
    wp[hi] = torch.exp(-((t[hi] - m1) ** 2) / (2 * s1**2))
    wp[lo] = torch.exp(-((t[lo] - m2) ** 2) / (2 * s2**2))
    w = wp
    if use_wd:
        abar = alphas_cumprod.double().cpu()
        w = w * torch.sqrt((1.0 - abar) / abar)
    w[:t_min] = 0.0
    w[t_max + 1 :] = 0.0
    return w / w.sum()


def tp_sds_timestep(step: int, total_steps: int, prior: Tensor) -> int:
    """DreamTime's t(i): the t whose upper tail mass ``sum_{t' >= t} p(t')`` is closest to i / N."""
    tail = torch.flip(torch.cumsum(torch.flip(prior, [0]), 0), [0])  # tail[t] = sum_{t' >= t} p(t')
    target = step / max(total_steps, 1)
    support = prior > 0
    err = torch.where(support, (tail - target).abs(), torch.full_like(tail, math.inf))
    # Ties (flat tail): the largest t, so the schedule starts at t_max.
    best = err.min()
    return int(torch.nonzero(err == best).max())


def t_bounds(cfg: ScheduleConfig, num_train_timesteps: int) -> tuple[int, int]:
    T = num_train_timesteps
    return max(0, int(round(cfg.t_min * T))), min(T - 1, int(round(cfg.t_max * T)))


class TimestepSchedule:
    """Timesteps for each step of a run, built once from the config and the model's noise schedule."""

    def __init__(self, cfg: ScheduleConfig, alphas_cumprod: Tensor, total_steps: int):
        self.cfg = cfg
        self.T = alphas_cumprod.shape[0]
        self.total_steps = total_steps
        self.t_lo, self.t_hi = t_bounds(cfg, self.T)
        self.prior = tp_sds_prior(
            alphas_cumprod.cpu(), self.t_lo, self.t_hi, cfg.tp_m1, cfg.tp_m2, cfg.tp_s1, cfg.tp_s2, cfg.tp_use_wd
        )
        self._tp_table: Optional[List[int]] = None

    def tp_table(self) -> List[int]:
        """t(i) for every step (computed once)."""
        if self._tp_table is None:
            self._tp_table = [tp_sds_timestep(i, self.total_steps, self.prior) for i in range(self.total_steps)]
        return self._tp_table

    def __call__(self, step: int, batch: int, generator: torch.Generator) -> Tensor:
        """[batch] int64 timesteps for ``step`` (0-based), drawn on the CPU ``generator``."""
        if self.cfg.timestep not in TIMESTEP_SCHEDULES:
            raise ValueError(f"unknown timestep schedule {self.cfg.timestep!r}; choose one of {list(TIMESTEP_SCHEDULES)}")
        return TIMESTEP_SCHEDULES[self.cfg.timestep](self, step, batch, generator)

    def _tp_sds(self, step: int, batch: int, generator: torch.Generator) -> Tensor:
        t = self.tp_table()[min(step, self.total_steps - 1)]
        ts = torch.full((batch,), t, dtype=torch.long)
        if self.cfg.tp_jitter > 0:
            j = int(round(self.cfg.tp_jitter * self.T))
            ts = ts + torch.randint(-j, j + 1, (batch,), generator=generator)
        return ts.clamp(self.t_lo, self.t_hi)

    def _linear(self, step: int, batch: int, generator: torch.Generator) -> Tensor:
        frac = step / max(self.total_steps - 1, 1)
        t = int(round(self.t_hi - (self.t_hi - self.t_lo) * frac))
        return torch.full((batch,), t, dtype=torch.long)

    def _uniform(self, step: int, batch: int, generator: torch.Generator, t_max: Optional[int] = None) -> Tensor:
        hi = self.t_hi if t_max is None else t_max
        return torch.randint(self.t_lo, hi + 1, (batch,), generator=generator)

    def _step(self, step: int, batch: int, generator: torch.Generator) -> Tensor:
        hi = self.t_hi
        if step >= self.cfg.step_at * self.total_steps:
            hi = max(self.t_lo, min(self.t_hi, int(round(self.cfg.step_t_max_end * self.T))))
        return self._uniform(step, batch, generator, hi)


#: ``schedule.timestep`` -> how a :class:`TimestepSchedule` draws a step's timesteps; the keys are the config's
#: allowed values (``config.TIMESTEP_SCHEDULE_NAMES``, a test pins them).
TIMESTEP_SCHEDULES: Dict[str, Callable[[TimestepSchedule, int, int, torch.Generator], Tensor]] = {
    "tp-sds": TimestepSchedule._tp_sds,
    "uniform": TimestepSchedule._uniform,
    "linear": TimestepSchedule._linear,
    "step": TimestepSchedule._step,
}


def milestone_value(step: int, total_steps: int, base: float, milestones: Sequence[Sequence[float]]) -> float:
    """A setting with milestones at ``step``: ``base`` until the first ``[fraction, value]`` is reached, then the
    value of the last milestone passed (milestones in increasing fractions)."""
    value = base
    for frac, v in milestones:
        if step >= frac * total_steps:
            value = v
    return value


def resolution_at(step: int, total_steps: int, base: int, milestones: Sequence[Sequence[float]]) -> int:
    """Render side at ``step``: ``base`` until the first milestone ``[fraction, side]`` is reached."""
    return int(milestone_value(step, total_steps, base, milestones))


def sh_degree_at(step: int, total_steps: int, max_degree: int, milestones: Sequence[float]) -> int:
    """Active SH degree: 0, plus one for each milestone fraction passed; all degrees if no milestones."""
    if not milestones:
        return max_degree
    passed = sum(1 for m in milestones if step >= m * total_steps)
    return min(max_degree, passed)


def ramp_at(step: int, total_steps: int, ramp: float) -> float:
    """A weight's factor at ``step``: rises linearly from 0 to 1 over the first ``ramp`` of the run (1 after it,
    and from the start when ``ramp`` is 0)."""
    span = ramp * total_steps
    return 1.0 if span <= 0 else min(1.0, step / span)


def densify_interval(every: int, total_steps: int, reference_steps: int) -> int:
    """``densify.every`` (or ``opacity_reset_every``) for a run of ``total_steps``: stretched in proportion when
    the run is longer than ``reference_steps`` (> 0), so the window holds as many events as at that length."""
    if every <= 0 or reference_steps <= 0 or total_steps <= reference_steps:
        return every
    return max(1, round(every * total_steps / reference_steps))


def in_densify_window(step: int, total_steps: int, start: float, stop: float, every: int) -> bool:
    """Densify at ``step`` (0-based; checked after the step's backward) when inside the window."""
    s0, s1 = int(start * total_steps), int(stop * total_steps)
    return s0 < step + 1 <= s1 and (step + 1 - s0) % every == 0


def means_lr_at(step: int, total_steps: int, lr_init: float, lr_final: float) -> float:
    """Exponential (log-linear) decay of the means' learning rate, as in 3DGS."""
    if lr_init <= 0 or lr_final <= 0:
        return lr_init
    frac = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
    return math.exp(math.log(lr_init) * (1 - frac) + math.log(lr_final) * frac)
