"""Report of the benchmark suite: CSV tables, PNG plots and a Markdown summary from the suite's raw results.

    python benchmarks/suite/report.py RESULTS_DIR [--levels 0.5 0.6 0.7] [--metric iou] [--no-plots]

Reads ``RESULTS_DIR/quality.jsonl`` (one JSON object per evaluation checkpoint of one run, optionally led by a
``{"meta": {...}}`` line) and, when present, ``RESULTS_DIR/speed.json``; writes into RESULTS_DIR:
``final_metrics.csv``, ``final_iou_by_kind.csv``, ``time_to_quality.csv``, ``curves.csv``, ``speed.csv`` (and
``speed_full_generation.csv``, ``speed_memory_curve.csv`` when those sections exist), ``quality_vs_seconds.png``,
``quality_vs_steps.png``, ``speed.png`` (with speed data), ``report.json`` (every headline number, machine
readable) and ``summary.md``.

Definitions (the functions below implement exactly these):

* A *run* is one (prior, method, prompt, seed); its checkpoints are sorted by step (a repeated step keeps the
  last line). Its *final* value of a metric is the value at its last checkpoint (null there: no final value).
  Means and stds are over runs; the std is the population std (0 for one run), as in the other benchmarks.
* *Curves*: each run is interpolated linearly between its checkpoints on a common x grid (``step`` or
  cumulative ``train_seconds``); past its last checkpoint it holds its last value, before its first checkpoint
  it has no value and is left out of the mean there (``n`` counts the runs that contribute).
* *Time to quality* of a run for a level: the first x at which the metric reaches the level (``>=`` for iou,
  psnr_fg, r_precision; ``<=`` for chamfer and janus), linearly interpolated between the two checkpoints that
  straddle it; the first checkpoint itself if it already reaches it; +inf if the run never reaches it (or
  has no value of the metric at all). The median is over *all* runs with +inf for the unreached ones, and is
  null when it is infinite (at least half of an even number, more than half of an odd number, never reach).
  Level ``nerf_final``: the mean final metric of the runs of every method of that prior whose name starts with
  ``nerf``.
* *Gaussians / NeRF ratio* (per prior, per non-NeRF method) = (median over that method's runs of the
  train_seconds to reach ``nerf_final``) / (median over the NeRF runs of their total train_seconds, i.e. the
  train_seconds at their last checkpoint). Null when the Gaussian median is null. Target: ratio <= 1/10.
* *TP-SDS / uniform ratio* (per prior, per fixed level) = median steps to reach the level of the TP-SDS method /
  that of the uniform method; null when either median is null. The target "TP-SDS reaches a fixed IoU in fewer
  steps than uniform" is met for a prior when, at every level that at least one of the two reaches, TP-SDS's
  median steps are strictly fewer (a level uniform never reaches counts as fewer when TP-SDS reaches it). A level
  both medians reach by their first evaluation is a tie that cannot be resolved and is left out of the verdict.
* Speed targets: ms per step of the Gaussians at 512x512 <= 45 (1 view) and <= 120 (4 views); peak memory of the
  Gaussians at 512x512 < 8 GiB (values from ``speed.json``'s ``targets`` when it has them); every matching entry
  is checked on its own; an out-of-memory entry (``"oom": true``) fails both its step-time and memory target.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

METRICS = ["iou", "psnr_fg", "chamfer", "janus", "r_precision"]
"""Quality metrics, in the order of the tables and plots."""
LOWER_IS_BETTER = {"chamfer", "janus"}
FINAL_COLUMNS = METRICS + ["train_seconds", "steps", "num_elements"]
"""Columns of the final-metric table ("steps" is the step of the last checkpoint)."""
METRIC_LABELS = {"iou": "IoU", "psnr_fg": "PSNR fg (dB)", "chamfer": "Chamfer", "janus": "Janus",
                 "r_precision": "R-precision", "train_seconds": "train time (s)", "steps": "steps",
                 "num_elements": "elements"}
DEFAULT_LEVELS = (0.5, 0.6, 0.7)
NERF_FINAL = "nerf_final"
NERF_PREFIX = "nerf"
TPSDS_METHOD = "gaussians-tpsds"
UNIFORM_METHOD = "gaussians-uniform"
GAUSSIANS_VS_NERF_TARGET = 0.1
DEFAULT_SPEED_TARGETS = {"ms_per_step_1_view": 45.0, "ms_per_step_4_views": 120.0, "peak_gib": 8.0,
                         "resolution": 512}
X_KINDS = ("step", "train_seconds")
DASH = "—"

Key = Tuple[str, str]  # (prior, method)


# --------------------------------------------------------------------------------------------- loading


def load_quality(path) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """``(meta, rows)`` of a quality.jsonl. ``meta`` merges every ``{"meta": ...}`` line (normally only the
    first); the suite's lines for runs that raised (``{..job.., "error": ...}``, no step) go to
    ``meta["failed_runs"]``; lines that are not JSON records (e.g. a last line cut short by a killed run) are
    skipped and counted in ``meta["skipped_lines"]``."""
    meta: Dict[str, Any] = {}
    rows: List[Dict[str, Any]] = []
    skipped = 0
    failed: List[Dict[str, Any]] = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(obj, dict):
            skipped += 1
        elif "meta" in obj and "method" not in obj:
            if isinstance(obj["meta"], dict):
                meta.update(obj["meta"])
        elif "error" in obj:
            failed.append(obj)
        elif obj.get("timing"):
            # Solo timing runs (quality.py --solo-gpu): their seconds are already folded into the pooled rows.
            meta["timing_rows"] = meta.get("timing_rows", 0) + 1
        elif "method" in obj and "step" in obj:
            rows.append(obj)
        else:
            skipped += 1
    if skipped:
        meta["skipped_lines"] = skipped
    if failed:
        meta["failed_runs"] = failed
    return meta, rows


def load_speed(path) -> Optional[Dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    prior: str
    method: str
    prompt: str
    kind: str
    seed: Any
    checkpoints: List[Dict[str, Any]] = field(default_factory=list)  # sorted by step

    @property
    def last(self) -> Dict[str, Any]:
        return self.checkpoints[-1]

    def final(self, column: str) -> Optional[float]:
        value = self.last.get("step" if column == "steps" else column)
        return _num(value)

    def series(self, metric: str, x: str) -> Tuple[np.ndarray, np.ndarray]:
        """(xs, ys) of the checkpoints where both are numbers, sorted by x, one value per x (the later)."""
        pts: Dict[float, float] = {}
        for c in self.checkpoints:
            xv, yv = _num(c.get(x)), _num(c.get(metric))
            if xv is not None and yv is not None:
                pts[xv] = yv
        xs = np.array(sorted(pts), dtype=float)
        return xs, np.array([pts[v] for v in xs], dtype=float)


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _prior(row: Dict[str, Any]) -> str:
    p = row.get("prior")
    return "default" if p is None or p == "" else str(p)


def group_runs(rows: Iterable[Dict[str, Any]]) -> Dict[Key, List[Run]]:
    """Runs per (prior, method), both sorted by name; a run's checkpoints sorted by step."""
    by_run: Dict[Tuple[str, str, str, str], Dict[float, Dict[str, Any]]] = {}
    info: Dict[Tuple[str, str, str, str], Tuple[str, str, Any]] = {}
    for r in rows:
        key = (_prior(r), str(r["method"]), str(r.get("prompt", "")), json.dumps(r.get("seed")))
        by_run.setdefault(key, {})[float(r["step"])] = r  # a repeated step keeps the last line
        info[key] = (str(r.get("prompt", "")), str(r.get("kind") or r.get("prompt", "")), r.get("seed"))
    out: Dict[Key, List[Run]] = {}
    for key in sorted(by_run):
        prompt, kind, seed = info[key]
        cps = [by_run[key][s] for s in sorted(by_run[key])]
        out.setdefault((key[0], key[1]), []).append(Run(key[0], key[1], prompt, kind, seed, cps))
    return out


def is_nerf(method: str, nerf_prefix: str = NERF_PREFIX) -> bool:
    return method.startswith(nerf_prefix)


def present_metrics(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The quality metrics with at least one number in ``rows``."""
    return [m for m in METRICS if any(_num(r.get(m)) is not None for r in rows)]


def _mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


def _median_inf(values: Sequence[float]) -> float:
    """Ordinary median of values that may be +inf (the mean of the two middle ones for an even count)."""
    v = sorted(values)
    n = len(v)
    if n == 0:
        return math.inf
    mid = n // 2
    return v[mid] if n % 2 else (v[mid - 1] + v[mid]) / 2


def _measured(times: Iterable[float]) -> List[float]:
    """Drop the NaN entries of :func:`first_reach` (runs with no x values: not measured)."""
    return [t for t in times if not math.isnan(t)]


def _finite_or_none(v: float) -> Optional[float]:
    return v if v is not None and math.isfinite(v) else None


# --------------------------------------------------------------------------------------------- curves


@dataclass
class Curve:
    """Mean and std over runs on a grid; NaN where no run contributes (``n == 0``)."""
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray


def default_grid(rows: Sequence[Dict[str, Any]], metric: str, x: str = "step", max_points: int = 300) -> np.ndarray:
    """The union of the checkpoints' x (where the metric is a number) over all runs; thinned to at most
    ``max_points`` quantiles of that union when longer (dense where the checkpoints are)."""
    xs = np.unique([float(r[x]) for r in rows if _num(r.get(x)) is not None and _num(r.get(metric)) is not None])
    if len(xs) > max_points:
        xs = np.unique(np.quantile(xs, np.linspace(0.0, 1.0, max_points)))
    return xs


def run_on_grid(run: Run, metric: str, x: str, grid: np.ndarray) -> np.ndarray:
    """The run's metric on ``grid``: linear between checkpoints, its last value past the end, NaN before the
    first checkpoint (and everywhere when it has no value of the metric)."""
    xs, ys = run.series(metric, x)
    out = np.full(len(grid), np.nan)
    if len(xs) == 0:
        return out
    inside = grid >= xs[0]
    out[inside] = np.interp(grid[inside], xs, ys)  # np.interp holds ys[-1] beyond xs[-1]
    return out


def curves(rows: Sequence[Dict[str, Any]], metric: str, x: str = "step", grid=None) -> Dict[Key, Curve]:
    """Per (prior, method): mean and std over runs of ``metric`` interpolated on a common x grid (``grid``, or
    :func:`default_grid` over all of ``rows``)."""
    if x not in X_KINDS:
        raise ValueError(f"x must be one of {X_KINDS}, not {x!r}")
    grid = default_grid(rows, metric, x) if grid is None else np.asarray(grid, dtype=float)
    out: Dict[Key, Curve] = {}
    for key, runs in group_runs(rows).items():
        vals = np.stack([run_on_grid(r, metric, x, grid) for r in runs]) if runs else np.empty((0, len(grid)))
        n = np.sum(~np.isnan(vals), axis=0)
        if not n.any():
            continue
        with np.errstate(invalid="ignore"):
            mean = np.where(n > 0, np.nansum(vals, axis=0) / np.maximum(n, 1), np.nan)
            var = np.where(n > 0, np.nansum((vals - mean) ** 2, axis=0) / np.maximum(n, 1), np.nan)
        out[key] = Curve(grid.copy(), mean, np.sqrt(var), n)
    return out


# --------------------------------------------------------------------------------------------- time to quality


def reaches(metric: str, value: float, level: float) -> bool:
    return value <= level if metric in LOWER_IS_BETTER else value >= level


def first_reach(run: Run, metric: str, level: float, x: str = "train_seconds") -> float:
    """First x at which the run's metric reaches ``level``, linear between checkpoints; +inf if never; NaN
    when the run has no x at all (e.g. no solo seconds for its method): unmeasured, not unreached."""
    xs, ys = run.series(metric, x)
    if len(xs) == 0 and any(_num(c.get(metric)) is not None for c in run.checkpoints):
        return math.nan
    for i in range(len(xs)):
        if reaches(metric, ys[i], level):
            if i == 0:
                return float(xs[0])
            y0, y1 = ys[i - 1], ys[i]
            frac = (level - y0) / (y1 - y0) if y1 != y0 else 1.0
            return float(xs[i - 1] + frac * (xs[i] - xs[i - 1]))
    return math.inf


def nerf_final_levels(rows: Sequence[Dict[str, Any]], metric: str = "iou",
                      nerf_prefix: str = NERF_PREFIX) -> Dict[str, Dict[str, Any]]:
    """Per prior with NeRF runs: ``{"value": mean final metric over the runs of every NeRF method, "n": runs,
    "methods": [...], "median_total_seconds": median total train_seconds of those runs (None if unknown)}``."""
    out: Dict[str, Dict[str, Any]] = {}
    for (prior, method), runs in group_runs(rows).items():
        if is_nerf(method, nerf_prefix):
            d = out.setdefault(prior, {"finals": [], "totals": [], "methods": []})
            d["methods"].append(method)
            d["finals"] += [v for v in (r.final(metric) for r in runs) if v is not None]
            d["totals"] += [v for v in (r.final("train_seconds") for r in runs) if v is not None]
    res = {}
    for prior, d in out.items():
        if not d["finals"]:
            continue
        res[prior] = {"value": statistics.fmean(d["finals"]), "n": len(d["finals"]), "methods": d["methods"],
                      "median_total_seconds": statistics.median(d["totals"]) if d["totals"] else None,
                      "n_total_seconds": len(d["totals"])}
    return res


def time_to_quality(rows: Sequence[Dict[str, Any]], metric: str = "iou",
                    levels: Sequence[Any] = DEFAULT_LEVELS + (NERF_FINAL,), x: str = "train_seconds",
                    nerf_prefix: str = NERF_PREFIX) -> List[Dict[str, Any]]:
    """One dict per (prior, method, level): ``level`` (a number or "nerf_final"), ``level_value``, ``x_kind``,
    ``median`` (null when infinite), ``n_runs``, ``n_reached``, ``fraction_reached`` and ``times`` (per run,
    +inf for unreached). A "nerf_final" level is left out for a prior without NeRF runs."""
    nerf = nerf_final_levels(rows, metric, nerf_prefix)
    out = []
    for (prior, method), runs in group_runs(rows).items():
        for level in levels:
            if level == NERF_FINAL:
                if prior not in nerf:
                    continue
                value = nerf[prior]["value"]
            else:
                value = float(level)
            times = _measured(first_reach(r, metric, value, x) for r in runs)
            reached = sum(math.isfinite(t) for t in times)
            out.append({"prior": prior, "method": method, "metric": metric, "level": level, "level_value": value,
                        "x_kind": x, "median": _finite_or_none(_median_inf(times)) if times else None,
                        "n_runs": len(times), "n_reached": reached,
                        "fraction_reached": reached / len(times) if times else None, "times": times})
    return out


# --------------------------------------------------------------------------------------------- ratios


def ratios(rows: Sequence[Dict[str, Any]], metric: str = "iou", levels: Sequence[float] = DEFAULT_LEVELS,
           nerf_prefix: str = NERF_PREFIX, tpsds: str = TPSDS_METHOD,
           uniform: str = UNIFORM_METHOD) -> Dict[str, List[Dict[str, Any]]]:
    """The two headline ratios (see the module docstring for the definitions).

    ``gaussians_vs_nerf``: per prior with NeRF runs and per non-NeRF method: ``level_value`` (NeRF's mean final
    metric), ``gaussians_seconds`` (median train_seconds to reach it, null when infinite),
    ``gaussians_fraction_reached``, ``nerf_seconds`` (median total train_seconds of the NeRF runs),
    ``ratio`` = gaussians_seconds / nerf_seconds.

    ``tpsds_vs_uniform``: per prior having both methods and per level: ``tpsds_steps``, ``uniform_steps``
    (median steps to reach it, null when infinite), their fractions reached, ``ratio`` = tpsds / uniform (null
    when either is null) and ``tpsds_fewer`` (True / False comparing the medians with +inf for unreached; None
    when neither reaches)."""
    groups = group_runs(rows)
    nerf = nerf_final_levels(rows, metric, nerf_prefix)
    g_vs_n = []
    for (prior, method), runs in groups.items():
        if is_nerf(method, nerf_prefix) or prior not in nerf:
            continue
        level = nerf[prior]["value"]
        times = _measured(first_reach(r, metric, level, "train_seconds") for r in runs)
        g = _finite_or_none(_median_inf(times)) if times else None
        n_sec = nerf[prior]["median_total_seconds"]
        g_vs_n.append({
            "prior": prior, "method": method, "nerf_methods": nerf[prior]["methods"], "metric": metric,
            "level_value": level, "nerf_n_runs": nerf[prior]["n"], "gaussians_seconds": g,
            "gaussians_n_runs": len(times), "gaussians_seconds_measured": bool(times),
            "gaussians_fraction_reached": sum(map(math.isfinite, times)) / len(times) if times else None,
            "nerf_seconds": n_sec,
            "ratio": g / n_sec if g is not None and n_sec else None,  # n_sec None or 0: not measured
        })
    t_vs_u = []
    for prior in sorted({p for p, _ in groups}):
        if (prior, tpsds) not in groups or (prior, uniform) not in groups:
            continue
        for level in levels:
            med = {}
            frac = {}
            for name, m in (("tpsds", tpsds), ("uniform", uniform)):
                times = _measured(first_reach(r, metric, float(level), "step") for r in groups[(prior, m)])
                med[name] = _median_inf(times)
                frac[name] = sum(map(math.isfinite, times)) / len(times) if times else 0.0
            t, u = med["tpsds"], med["uniform"]
            both = math.isfinite(t) and math.isfinite(u)
            # Both medians at the first evaluation: the level was reached before either could be measured, so
            # it says nothing about which is faster; it is left out of the verdict.
            first = max(min(float(r.checkpoints[0]["step"]) for r in groups[(prior, m)]) for m in (tpsds, uniform))
            tie_first = both and t <= first and u <= first
            t_vs_u.append({
                "prior": prior, "metric": metric, "level": float(level), "tpsds_method": tpsds,
                "uniform_method": uniform, "tpsds_steps": _finite_or_none(t), "uniform_steps": _finite_or_none(u),
                "tpsds_fraction_reached": frac["tpsds"], "uniform_fraction_reached": frac["uniform"],
                "ratio": t / u if both and u > 0 else None,
                "tpsds_fewer": None if tie_first or not (math.isfinite(t) or math.isfinite(u)) else bool(t < u),
                "tie_at_first_eval": tie_first,
            })
    return {"gaussians_vs_nerf": g_vs_n, "tpsds_vs_uniform": t_vs_u}


# --------------------------------------------------------------------------------------------- final metrics


def final_metrics(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per (prior, method): ``n_runs`` and, for every column of FINAL_COLUMNS, ``{col}_mean``, ``{col}_std``,
    ``{col}_n`` over the runs' final values (null finals left out)."""
    out = []
    for (prior, method), runs in group_runs(rows).items():
        row: Dict[str, Any] = {"prior": prior, "method": method, "n_runs": len(runs)}
        for col in FINAL_COLUMNS:
            vals = [v for v in (r.final(col) for r in runs) if v is not None]
            row[f"{col}_mean"], row[f"{col}_std"] = _mean_std(vals)
            row[f"{col}_n"] = len(vals)
        out.append(row)
    return out


def final_by_kind(rows: Sequence[Dict[str, Any]], metric: str = "iou") -> List[Dict[str, Any]]:
    """Per (prior, method, kind): mean, std and n over runs of the final ``metric``."""
    out = []
    for (prior, method), runs in group_runs(rows).items():
        for kind in sorted({r.kind for r in runs}):
            vals = [v for v in (r.final(metric) for r in runs if r.kind == kind) if v is not None]
            mean, std = _mean_std(vals)
            out.append({"prior": prior, "method": method, "kind": kind, "metric": metric,
                        "mean": mean, "std": std, "n": len(vals)})
    return out


# --------------------------------------------------------------------------------------------- targets


def speed_targets(speed: Optional[Dict[str, Any]]) -> Dict[str, float]:
    t = dict(DEFAULT_SPEED_TARGETS)
    for k, v in ((speed or {}).get("targets") or {}).items():
        if k in t and _num(v) is not None:
            t[k] = float(v)
    return t


def entry_shape(entry: Dict[str, Any]) -> Tuple[Optional[float], Optional[float]]:
    """(resolution, views) of a speed entry; from its name ("gaussians-512-4view") when the fields are absent,
    as in the suite's out-of-memory entries."""
    res, views = _num(entry.get("resolution")), _num(entry.get("views"))
    m = re.search(r"-(\d+)-(\d+)views?\b", str(entry.get("name", "")))
    if m:
        res = float(m.group(1)) if res is None else res
        views = float(m.group(2)) if views is None else views
    return res, views


def _is_gaussians(entry: Dict[str, Any]) -> bool:
    rep = entry.get("representation")
    return rep == "gaussians" if rep else str(entry.get("name", "")).startswith("gaussians")


def targets(rows: Sequence[Dict[str, Any]], speed: Optional[Dict[str, Any]], metric: str = "iou",
            levels: Sequence[float] = DEFAULT_LEVELS, rat: Optional[Dict[str, Any]] = None,
            **ratio_kwargs) -> List[Dict[str, Any]]:
    """One dict per checked (target, scope): ``target``, ``scope``, ``measured`` (text), ``status`` in
    {"met", "not met", "not measured"}. Every status is computed from the data."""
    rat = rat if rat is not None else ratios(rows, metric, levels, **ratio_kwargs)
    out: List[Dict[str, Any]] = []
    t1 = f"Gaussians reach NeRF's final {METRIC_LABELS.get(metric, metric)} in <= 1/10 of NeRF's wall-clock"
    if not rat["gaussians_vs_nerf"]:
        out.append({"target": t1, "scope": DASH, "measured": "no NeRF runs", "status": "not measured"})
    for r in rat["gaussians_vs_nerf"]:
        if not r["nerf_seconds"]:
            status, measured = "not measured", "NeRF train_seconds missing"
        elif not r.get("gaussians_seconds_measured", True):
            status, measured = "not measured", f"{r['method']} train_seconds missing"
        elif r["ratio"] is None:
            status = "not met"
            measured = (f"median run never reaches {fmt(r['level_value'])} "
                        f"({fmt_frac(r['gaussians_fraction_reached'])} of runs do)")
        else:
            status = "met" if r["ratio"] <= GAUSSIANS_VS_NERF_TARGET else "not met"
            measured = f"ratio {fmt(r['ratio'])} ({fmt(r['gaussians_seconds'])} s / {fmt(r['nerf_seconds'])} s)"
        out.append({"target": t1, "scope": f"{r['prior']} / {r['method']}", "measured": measured, "status": status})

    t2 = f"TP-SDS reaches a fixed {METRIC_LABELS.get(metric, metric)} in fewer steps than uniform"
    by_prior: Dict[str, List[Dict[str, Any]]] = {}
    for r in rat["tpsds_vs_uniform"]:
        by_prior.setdefault(r["prior"], []).append(r)
    if not by_prior:
        out.append({"target": t2, "scope": DASH, "measured": "no prior with both TP-SDS and uniform runs",
                    "status": "not measured"})
    for prior, rs in by_prior.items():
        compared = [r for r in rs if r["tpsds_fewer"] is not None]
        parts = [f"{fmt(r['level'])}: {fmt(r['tpsds_steps'])} vs {fmt(r['uniform_steps'])}" for r in rs]
        if not compared:
            status = "not measured"
        else:
            status = "met" if all(r["tpsds_fewer"] for r in compared) else "not met"
        out.append({"target": t2, "scope": prior, "measured": "median steps " + "; ".join(parts), "status": status})

    st = speed_targets(speed)
    res = st["resolution"]
    # an entry that ran out of memory (``"oom": true``) fails both its step-time and the memory target
    entries = [e for e in (speed or {}).get("entries", []) or [] if _is_gaussians(e) and entry_shape(e)[0] == res]
    oom = "out of memory"
    for views, key in ((1, "ms_per_step_1_view"), (4, "ms_per_step_4_views")):
        tname = f"SD-shaped step at {res:g}x{res:g}, {views} view{'s' if views > 1 else ''}: <= {fmt(st[key])} ms"
        es = [e for e in entries if entry_shape(e)[1] == views and (e.get("oom") or _num(e.get("ms_per_step")) is not None)]
        if not es:
            out.append({"target": tname, "scope": DASH, "measured": "no entry", "status": "not measured"})
        for e in es:
            ms = None if e.get("oom") else float(e["ms_per_step"])
            out.append({"target": tname, "scope": str(e.get("name", DASH)), "measured": oom if ms is None else f"{fmt(ms)} ms",
                        "status": "met" if ms is not None and ms <= st[key] else "not met"})
    tname = f"peak memory at {res:g}x{res:g} < {fmt(st['peak_gib'])} GiB"
    es = [e for e in entries if e.get("oom") or _num(e.get("peak_gib")) is not None]
    if not es:
        out.append({"target": tname, "scope": DASH, "measured": "no entry with a GPU peak", "status": "not measured"})
    for e in es:
        g = None if e.get("oom") else float(e["peak_gib"])
        out.append({"target": tname, "scope": str(e.get("name", DASH)), "measured": oom if g is None else f"{fmt(g)} GiB",
                    "status": "met" if g is not None and g < st["peak_gib"] else "not met"})
    return out


# --------------------------------------------------------------------------------------------- formatting


_NOT_A_NUMBER = {"", "nan", "-nan", "inf", "+inf", "-inf", "infinity", "-infinity", "none", "null"}


def fmt(v: Any, digits: int = 3) -> str:
    """3 significant digits (integers shown whole from 1000 up); "—" for missing, NaN or infinite."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, str):
        return DASH if v.strip().lower() in _NOT_A_NUMBER else v
    f = _num(v)
    if f is None:
        return DASH
    if f == 0:
        return "0"
    if abs(f) >= 10 ** digits:
        return f"{f:.0f}"
    s = f"{f:.{digits}g}"
    if "e" in s:  # tiny: keep the exponent form but tidy
        m, e = s.split("e")
        return f"{m}e{int(e)}"
    return s


def fmt_pm(mean: Any, std: Any, n: Optional[int] = None, n_runs: Optional[int] = None) -> str:
    """"mean ± std", the mean alone for one value, "(n=k)" appended when k differs from the runs."""
    if _num(mean) is None:
        return DASH
    s = fmt(mean) + (f" ± {fmt(std)}" if _num(std) is not None and n != 1 else "")
    if n is not None and n_runs is not None and n != n_runs:
        s += f" (n={n})"
    return s


def fmt_frac(f: Any) -> str:
    return DASH if _num(f) is None else f"{100 * float(f):.0f}%"


def _cell(v: Any) -> str:
    s = fmt(v)
    s = s.replace("\r", " ").replace("\n", " ").replace("|", "&#124;").strip()
    return s if s else DASH


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; every row padded or cut to the header's width, pipes in cells escaped."""
    w = len(header)
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join([" --- "] * w) + "|"]
    for r in rows:
        cells = [_cell(c) for c in list(r)[:w]] + [DASH] * max(0, w - len(r))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv_value(v: Any) -> Any:
    if v is None or isinstance(v, bool):
        return "" if v is None else str(v).lower()
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_csv_value(r.get(c)) for c in columns])
    return path


# --------------------------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


LINESTYLES = ["-", "--", ":", "-."]


def plot_quality(rows: Sequence[Dict[str, Any]], x: str, path: Path) -> Path:
    """Grid of subplots, one per present metric; a line (mean) with a std band per (prior, method): colour
    per method, line style per prior. Seconds on a log axis when they span more than a decade."""
    plt = _plt()
    metrics = present_metrics(rows)
    ncol = min(3, max(1, len(metrics)))
    nrow = max(1, math.ceil(len(metrics) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.8 * nrow), squeeze=False)
    keys = sorted(group_runs(rows))
    methods = sorted({m for _, m in keys})
    priors = sorted({p for p, _ in keys})
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    styles = {p: LINESTYLES[i % len(LINESTYLES)] for i, p in enumerate(priors)}
    for ax, metric in zip(axes.flat, metrics):
        logx = False
        for (prior, method), c in curves(rows, metric, x).items():
            ok = c.n > 0
            if x == "train_seconds":
                ok &= c.x > 0
            if not ok.any():
                continue
            xs, m, s = c.x[ok], c.mean[ok], c.std[ok]
            label = method if len(priors) == 1 else f"{method} ({prior})"
            ax.plot(xs, m, color=colors[method], linestyle=styles[prior], label=label)
            ax.fill_between(xs, m - s, m + s, color=colors[method], alpha=0.15, linewidth=0)
            if x == "train_seconds" and xs.max() > 10 * xs.min():
                logx = True
        if logx:
            ax.set_xscale("log")
        ax.set_title(METRIC_LABELS.get(metric, metric) + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
        ax.set_xlabel("train seconds" if x == "train_seconds" else "step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    if not metrics:
        axes.flat[0].text(0.5, 0.5, "no quality data", ha="center", va="center")
    fig.suptitle(f"quality vs {'train seconds' if x == 'train_seconds' else 'steps'} (mean ± std over runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_speed(speed: Dict[str, Any], path: Path) -> Path:
    """ms/step stacked by stage per entry (with an "other" remainder up to ms_per_step), and the memory curve."""
    plt = _plt()
    entries = [e for e in speed.get("entries", []) or [] if _num(e.get("ms_per_step")) is not None]
    mem = speed.get("memory_curve") or []
    fig, axes = plt.subplots(1, 2, figsize=(13, max(3.5, 0.45 * len(entries) + 1.5)), squeeze=False)
    ax = axes[0, 0]
    stages = _stages(entries)
    names = [str(e.get("name", i)) for i, e in enumerate(entries)]
    left = np.zeros(len(entries))
    for i, st in enumerate(stages + ["other"]):
        if st == "other":
            vals = np.array([max(0.0, float(e["ms_per_step"]) - sum(_num(v) or 0.0 for v in (e.get("stage_ms") or {}).values()))
                             for e in entries])
        else:
            vals = np.array([_num((e.get("stage_ms") or {}).get(st)) or 0.0 for e in entries])
        if vals.any():
            ax.barh(names, vals, left=left, label=st, color=f"C{i % 10}" if st != "other" else "lightgrey")
        left += vals
    if entries:
        ax.invert_yaxis()
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no per-step entries", ha="center", va="center")
    ax.set_xlabel("ms per step")
    ax.set_title("ms per step by stage")
    ax = axes[0, 1]
    by_name: Dict[str, List[Dict[str, Any]]] = {}
    for p in mem:
        by_name.setdefault(str(p.get("name", "")), []).append(p)
    for i, (name, pts) in enumerate(sorted(by_name.items())):
        pts = sorted(pts, key=lambda p: _num(p.get("step")) or 0.0)
        steps = [_num(p.get("step")) for p in pts]
        for col, ls, suffix in (("allocated_gib", "-", "allocated"), ("reserved_gib", "--", "reserved"),
                                ("peak_gib", ":", "peak within steps")):
            ys = [_num(p.get(col)) for p in pts]
            xy = [(s, y) for s, y in zip(steps, ys) if s is not None and y is not None]
            if xy:
                ax.plot(*zip(*xy), color=f"C{i % 10}", linestyle=ls, label=f"{name} {suffix}")
    if by_name:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no memory curve", ha="center", va="center")
    ax.set_xlabel("step")
    ax.set_ylabel("GiB")
    ax.set_title("GPU memory during training")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _stages(entries: Sequence[Dict[str, Any]]) -> List[str]:
    stages: List[str] = []
    for e in entries:
        for k in (e.get("stage_ms") or {}):
            if k not in stages:
                stages.append(k)
    return stages


# --------------------------------------------------------------------------------------------- summary


ENV_KEYS = ["device", "date", "python", "torch", "cuda", "triton", "gsplat", "diffusers", "transformers", "git",
            "host_cpus"]


def _env(d: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Flattened environment of a meta / speed.json (its ``environment`` dict merged over the top level)."""
    if not d:
        return {}
    out = {k: v for k, v in d.items() if not isinstance(v, (dict, list))}
    if isinstance(d.get("environment"), dict):
        out.update(d["environment"])
    return out


def _commands(d: Optional[Dict[str, Any]]) -> List[str]:
    out: List[str] = []
    for src in (d or {}, (d or {}).get("environment") or {}):
        for k in ("commands", "command"):
            v = src.get(k)
            for c in ([v] if isinstance(v, str) else v if isinstance(v, list) else []):
                if isinstance(c, str) and c and c not in out:
                    out.append(c)
    return out


def build_summary(results_dir: Path, meta: Dict[str, Any], rows: Sequence[Dict[str, Any]],
                  speed: Optional[Dict[str, Any]], metric: str, levels: Sequence[float],
                  rat: Dict[str, Any], tgt: List[Dict[str, Any]], ttq: List[Dict[str, Any]],
                  files: Sequence[str]) -> str:
    L: List[str] = []
    runs = group_runs(rows)
    n_runs = sum(len(v) for v in runs.values())
    L.append("# splatgen benchmark suite: results\n")
    L.append(f"From `quality.jsonl` ({len(rows)} checkpoints of {n_runs} runs, {len(runs)} prior/method pairs)"
             + (" and `speed.json`." if speed else "; no `speed.json` (speed not measured)."))
    if meta.get("skipped_lines"):
        L.append(f"\n{meta['skipped_lines']} line(s) of quality.jsonl were not JSON records and were skipped.")
    ppg = _num(meta.get("procs_per_gpu"))
    if meta.get("seconds_from_solo"):
        L.append(f"\n**Note:** the quality runs shared each GPU between {ppg or 1:g} processes, so their own seconds are "
                 "inflated; the train_seconds used here are each method's solo seconds at the same step, measured "
                 f"on a GPU kept free for {meta.get('timing_jobs', '?')} timing runs (quality.py --solo-gpu).")
    elif ppg is not None and ppg > 1:
        L.append(f"\n**Note:** the quality runs shared each GPU between {ppg:g} processes: their train_seconds are "
                 f"inflated by the sharing (the step counts are not).")
    failed = meta.get("failed_runs") or []
    if failed:
        L.append(f"\n**{len(failed)} run(s) failed** and are missing from every table below:\n")
        L.append(md_table(["prior", "method", "prompt", "seed", "error"],
                          [[f.get("prior"), f.get("method"), f.get("prompt"), str(f.get("seed")), f.get("error")]
                           for f in failed]))
    L.append("\n## Environment\n")
    qe, se = _env(meta), _env(speed)
    keys = [k for k in ENV_KEYS if k in qe or k in se] + sorted(
        k for k in set(qe) | set(se) if k not in ENV_KEYS and k not in ("command", "commands", "skipped_lines", "benchmark"))
    if keys:
        L.append(md_table(["field", "quality runs", "speed runs"],
                          [[k, str(qe[k]) if qe.get(k) is not None else DASH,
                            str(se[k]) if se.get(k) is not None else DASH] for k in keys]))
    else:
        L.append("Not recorded (no meta line in quality.jsonl, no speed.json).")

    L.append("\n## Headline\n")
    L.append(f"**Gaussians vs NeRF**: seconds for a Gaussian method to reach the NeRF's final mean "
             f"{METRIC_LABELS.get(metric, metric)} (median over its runs, unreached = +inf) / the NeRF's wall-clock "
             f"(median over its runs of total train_seconds). Target <= {fmt(GAUSSIANS_VS_NERF_TARGET)}.\n")
    if rat["gaussians_vs_nerf"]:
        L.append(md_table(
            ["prior", "method", f"NeRF final {metric}", "Gaussians time (s)", "runs reaching", "NeRF time (s)",
             "ratio"],
            [[r["prior"], r["method"], r["level_value"], r["gaussians_seconds"],
              fmt_frac(r["gaussians_fraction_reached"]), r["nerf_seconds"], r["ratio"]]
             for r in rat["gaussians_vs_nerf"]]))
    else:
        L.append("Not measured: no NeRF runs in quality.jsonl.")
    L.append(f"\n**TP-SDS vs uniform**: median steps to reach each fixed {METRIC_LABELS.get(metric, metric)} "
             f"(unreached = +inf), TP-SDS / uniform; below 1 means TP-SDS is faster.\n")
    if rat["tpsds_vs_uniform"]:
        L.append(md_table(
            ["prior", f"{metric} level", "TP-SDS steps", "TP-SDS runs reaching", "uniform steps",
             "uniform runs reaching", "ratio", "TP-SDS fewer steps"],
            [[r["prior"], r["level"], r["tpsds_steps"], fmt_frac(r["tpsds_fraction_reached"]), r["uniform_steps"],
              fmt_frac(r["uniform_fraction_reached"]), r["ratio"],
              "tie (first evaluation)" if r.get("tie_at_first_eval") else r["tpsds_fewer"]]
             for r in rat["tpsds_vs_uniform"]]))
    else:
        L.append(f"Not measured: no prior with both `{TPSDS_METHOD}` and `{UNIFORM_METHOD}` runs.")
    L.append("\n**Targets** (status computed from the data above):\n")
    L.append(md_table(["target", "scope", "measured", "status"],
                      [[t["target"], t["scope"], t["measured"], f"**{t['status']}**"] for t in tgt]))

    L.append("\n## Final metrics\n")
    L.append("Mean ± std over runs (prompt x seed) at each run's last checkpoint; (n=k) where a metric is "
             "missing for some runs."
             + (" Train time is each method's solo seconds at that step, the same for all its runs (hence ± 0)."
                if meta.get("seconds_from_solo") else "") + "\n")
    fm = final_metrics(rows)
    cols = ["iou", "psnr_fg", "chamfer", "janus", "r_precision", "train_seconds", "steps"]
    L.append(md_table(["prior", "method", "runs"] + [METRIC_LABELS[c] for c in cols],
                      [[r["prior"], r["method"], str(r["n_runs"])]
                       + [fmt_pm(r[f"{c}_mean"], r[f"{c}_std"], r[f"{c}_n"], r["n_runs"]) for c in cols]
                       for r in fm]))
    L.append("\nFinal IoU per object kind:\n")
    fk = final_by_kind(rows, "iou")
    pairs = sorted(runs)
    kinds = sorted({r["kind"] for r in fk})
    look = {(r["prior"], r["method"], r["kind"]): r for r in fk}
    L.append(md_table(["kind"] + [f"{m} ({p})" if len({p for p, _ in pairs}) > 1 else m for p, m in pairs],
                      [[k] + [fmt_pm(look[(p, m, k)]["mean"], look[(p, m, k)]["std"], look[(p, m, k)]["n"]) if (p, m, k) in look else DASH
                              for p, m in pairs] for k in kinds]))

    L.append("\n## Time to quality\n")
    L.append(f"Median over runs of the first train seconds / step at which {metric} reaches the level (linear "
             f"between checkpoints; unreached runs count as +inf; {DASH} when the median is not reached).\n")
    steps_look = {(r["prior"], r["method"], str(r["level"])): r for r in ttq if r["x_kind"] == "step"}
    trows = []
    for r in ttq:
        if r["x_kind"] != "train_seconds":
            continue
        s = steps_look.get((r["prior"], r["method"], str(r["level"])))
        trows.append([r["prior"], r["method"], r["level"] if r["level"] != NERF_FINAL else "NeRF final",
                      r["level_value"], r["median"], s["median"] if s else None,
                      f"{r['n_reached']}/{r['n_runs']}"])
    L.append(md_table(["prior", "method", "level", f"{metric}", "median time (s)", "median steps", "runs reaching"],
                      trows))

    L.append("\n## Speed\n")
    if not speed:
        L.append("Not measured: no `speed.json` in this results folder.")
    else:
        entries = speed.get("entries") or []
        stages = _stages(entries)
        if entries:
            L.append("Per-step cost (ms) by stage and peak GPU memory.\n")
            L.append(md_table(["entry", "representation", "resolution", "views", "ms/step"] + stages
                              + ["peak (GiB)", "elements", "note"],
                              [[e.get("name"), e.get("representation"), *entry_shape(e),
                                "OOM" if e.get("oom") else e.get("ms_per_step")]
                               + [(e.get("stage_ms") or {}).get(s) for s in stages]
                               + [e.get("peak_gib"), e.get("num_elements"), e.get("note") or DASH]
                               for e in entries]))
        else:
            L.append("No per-step entries.")
        fg = speed.get("full_generation") or []
        if fg:
            L.append("\nWhole generations:\n")
            L.append(md_table(["run", "representation", "steps", "time (s)", "of which setup (s)", "extrapolated",
                               "note"],
                              [[g.get("name"), g.get("representation"), g.get("steps"), g.get("seconds"),
                                g.get("setup_seconds"), g.get("extrapolated"), g.get("note") or DASH] for g in fg]))
        mem = speed.get("memory_curve") or []
        if mem:
            by: Dict[str, List[Dict[str, Any]]] = {}
            for p in mem:
                by.setdefault(str(p.get("name", "")), []).append(p)
            L.append("\nMemory during training (full curve in `speed.png` / `speed_memory_curve.csv`):\n")
            leaks = speed.get("leak_mib_per_100_steps") or {}
            L.append(md_table(["run", "points", "max allocated (GiB)", "max reserved (GiB)", "max elements",
                               "leak (MiB / 100 steps)"],
                              [[n, str(len(ps))] + [max((v for v in (_num(p.get(c)) for p in ps) if v is not None),
                                                        default=None)
                                                    for c in ("allocated_gib", "reserved_gib", "num_elements")]
                               + [leaks.get(n)] for n, ps in sorted(by.items())]))
            L.append("\nLeak: slope of allocated memory once the model stops growing (about 0 = no leak).")

    L.append("\n## Files\n")
    for f in files:
        if f.endswith(".png"):
            L.append(f"- [{f}]({f})\n\n  ![{f}]({f})")
        else:
            L.append(f"- [{f}]({f})")

    L.append("\n## How to reproduce\n")
    L.append("```bash")
    cmds = _commands(meta)
    L += cmds if cmds else ["# quality runs: command not recorded in quality.jsonl's meta line"]
    if speed:
        sc = _commands(speed)
        L += sc if sc else ["# speed: command not recorded in speed.json"]
    lv = " ".join(fmt(v) for v in levels)
    L.append(f"python benchmarks/suite/report.py {results_dir} --levels {lv} --metric {metric}")
    L.append("```")
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------------------------- CLI


def _common():
    """The benchmarks' shared helpers (imported on use: they import torch, the analysis above does not)."""
    here = str(Path(__file__).resolve().parents[1])
    if here not in sys.path:
        sys.path.insert(0, here)
    import common

    return common


def write_report(results_dir, levels: Sequence[float] = DEFAULT_LEVELS, metric: str = "iou", plots: bool = True,
                 report_environment: bool = True) -> Dict[str, Any]:
    """Read RESULTS_DIR/quality.jsonl (+ speed.json) and write every output; returns report.json's payload."""
    d = Path(results_dir)
    meta, rows = load_quality(d / "quality.jsonl")
    speed = load_speed(d / "speed.json")
    files: List[str] = []

    fm = final_metrics(rows)
    cols = ["prior", "method", "n_runs"] + [f"{c}_{s}" for c in FINAL_COLUMNS for s in ("mean", "std", "n")]
    write_csv(d / "final_metrics.csv", cols, fm)
    files.append("final_metrics.csv")
    write_csv(d / "final_iou_by_kind.csv", ["prior", "method", "kind", "metric", "mean", "std", "n"],
              final_by_kind(rows, "iou"))
    files.append("final_iou_by_kind.csv")

    ttq = [r for x in ("train_seconds", "step") for r in time_to_quality(rows, metric, tuple(levels) + (NERF_FINAL,), x)]
    write_csv(d / "time_to_quality.csv", ["prior", "method", "metric", "level", "level_value", "x_kind", "median",
                                          "n_runs", "n_reached", "fraction_reached"], ttq)
    files.append("time_to_quality.csv")

    crow = []
    for m in present_metrics(rows):
        for x in X_KINDS:
            for (prior, method), c in curves(rows, m, x).items():
                crow += [{"prior": prior, "method": method, "metric": m, "x_kind": x, "x": float(c.x[i]),
                          "mean": float(c.mean[i]), "std": float(c.std[i]), "n": int(c.n[i])}
                         for i in range(len(c.x)) if c.n[i] > 0]
    write_csv(d / "curves.csv", ["prior", "method", "metric", "x_kind", "x", "mean", "std", "n"], crow)
    files.append("curves.csv")

    if speed:
        entries = speed.get("entries") or []
        stages = _stages(entries)
        write_csv(d / "speed.csv", ["name", "representation", "resolution", "views", "ms_per_step"]
                  + [f"stage_{s}_ms" for s in stages] + ["peak_gib", "num_elements", "oom", "note"],
                  [{**e, "resolution": entry_shape(e)[0], "views": entry_shape(e)[1],
                    **{f"stage_{s}_ms": (e.get("stage_ms") or {}).get(s) for s in stages}} for e in entries])
        files.append("speed.csv")
        if speed.get("full_generation"):
            write_csv(d / "speed_full_generation.csv", ["name", "representation", "steps", "seconds", "setup_seconds",
                                                        "extrapolated", "measured_steps", "steady_ms_per_step", "note"],
                      speed["full_generation"])
            files.append("speed_full_generation.csv")
        if speed.get("memory_curve"):
            write_csv(d / "speed_memory_curve.csv",
                      ["name", "step", "allocated_gib", "reserved_gib", "peak_gib", "num_elements"],
                      speed["memory_curve"])
            files.append("speed_memory_curve.csv")

    if plots:
        plot_quality(rows, "train_seconds", d / "quality_vs_seconds.png")
        plot_quality(rows, "step", d / "quality_vs_steps.png")
        files += ["quality_vs_seconds.png", "quality_vs_steps.png"]
        if speed:
            plot_speed(speed, d / "speed.png")
            files.append("speed.png")

    rat = ratios(rows, metric, levels)
    tgt = targets(rows, speed, metric, levels, rat=rat)
    common = _common()
    payload = {
        "metric": metric, "levels": list(levels), "ratios": rat, "targets": tgt,
        "time_to_quality": [{k: v for k, v in r.items() if k != "times"} for r in ttq],
        "final_metrics": fm, "quality_meta": meta,
        "speed_environment": _env(speed) or None,
        "report_environment": common.environment() if report_environment else None,
    }
    common.write_json(d / "report.json", json.loads(json.dumps(payload, default=str)))
    files.append("report.json")
    (d / "summary.md").write_text(build_summary(d, meta, rows, speed, metric, levels, rat, tgt, ttq, files))
    return payload


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results_dir", type=Path, help="folder with quality.jsonl (and optionally speed.json)")
    ap.add_argument("--levels", type=float, nargs="+", default=list(DEFAULT_LEVELS),
                    help="fixed levels of --metric for time to quality and TP-SDS vs uniform (default 0.5 0.6 0.7)")
    ap.add_argument("--metric", default="iou", choices=METRICS, help="quality metric of the headline (default iou)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    ap.add_argument("--no-report-environment", action="store_true",
                    help="do not record this machine's environment in report.json (it imports diffusers etc.)")
    args = ap.parse_args(argv)
    if not (args.results_dir / "quality.jsonl").exists():
        ap.error(f"{args.results_dir / 'quality.jsonl'} not found")
    payload = write_report(args.results_dir, args.levels, args.metric, plots=not args.no_plots,
                           report_environment=not args.no_report_environment)
    for t in payload["targets"]:
        print(f"[{t['status']}] {t['target']} ({t['scope']}): {t['measured']}")
    print(f"wrote {args.results_dir / 'summary.md'}")


if __name__ == "__main__":
    main()
