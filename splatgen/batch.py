"""Many prompts: ``splatgen batch PROMPTS --out DIR`` and :func:`generate_many`.

- **Input.** A text file (one prompt per line; blank lines and ``#`` comments skipped) or JSONL (one object per
  line: ``{"prompt": ..., "seed": 3, "overrides": {"run": {"steps": 600}} or ["run.steps=600"], "name": ...}``).
  Every line is checked (prompt, config keys, values) before any model is loaded; a bad line is reported with
  its line number.
- **One folder per prompt**, ``DIR/<NNNN>-<prompt slug>`` (or the line's ``name``), written as ``.partial`` and
  renamed when complete (see :mod:`splatgen.rundir`): a folder under its final name is a finished result.
  Rerunning the same command skips finished prompts and resumes interrupted ones from their checkpoints.
  ``DIR/batch.json`` records what the batch is; another batch in the same ``DIR`` is refused.
- **Failures never stop the batch.** A prompt that fails (NaN/Inf, out of memory, a model error) is recorded
  with its error and tried again, from scratch, up to ``retries`` more times; the rest go on.
- **Records.** ``DIR/manifest.jsonl`` (append-only, one line per attempt: status, seconds, files, metrics,
  rank, host), ``DIR/summary.csv`` (one row per prompt, its latest state) and ``DIR/index.html`` (a gallery of
  the previews, and turntables where made), rewritten as prompts finish.
- **Progress.** A bar over the prompts on a terminal; elsewhere (a log file, CI, Slurm) a log line per prompt as
  it starts and as it ends, with its scores and an ETA (:class:`PromptLines`); a failed attempt always.
- **Guidance loaded once per process** and reused for every prompt whose guidance settings are the same.
- **Many GPUs and machines.** Under ``torchrun`` (``--nproc_per_node=N``, any number of nodes), each process
  (rank) takes the GPU ``LOCAL_RANK`` and works through the prompts: first its own share (every N-th prompt,
  so ranks do not contend), then it takes over prompts no one has started yet from the others' shares. Who
  works on a prompt is decided by the run folder's claim (an exclusive mkdir and a file lock on a shared file
  system), so no prompt is ever run twice at once and no GPU idles while prompts are waiting. A rank that
  dies (torchrun restarts the workers) leaves its folder unlocked, and the restarted ranks resume it.
  Nothing here depends on how the processes were started: a Slurm array, a Ray job or a shell loop running
  the same command on the same ``DIR`` shares the work the same way.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import html
import io
import json
import logging
import os
import re
import socket
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch

from .api import check_prompt, resolve_config, run_generation
from .config import Config
from .errors import ConfigError, NonFiniteError, PromptError, RunDirError, RunInterrupted, SplatgenError, short
from .fileio import atomic_write_text, json_line, open_own, open_own_text, spreadsheet_cell, write_json
from .guidance.multiview import uses_view_words
from .rundir import PARTIAL, RunFolder, partial_path, slug

log = logging.getLogger("splatgen")

MANIFEST = "manifest.jsonl"
SUMMARY_CSV = "summary.csv"
#: seconds between rewrites of summary.csv and index.html while a batch runs (and once at its end)
SUMMARY_EVERY_S = 30.0
GALLERY = "index.html"
BATCH_INFO = "batch.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ITEM_KEYS = {"prompt", "seed", "overrides", "name"}


@dataclass
class BatchItem:
    """One prompt of a batch: where it came from, its resolved config and its folder name."""

    index: int
    line: int
    prompt: str
    name: str
    overrides: List[str] = field(default_factory=list)
    seed: Optional[int] = None
    cfg: Optional[Config] = None
    """The resolved config of its override set, shared by the entries of that set: run with :meth:`config`."""

    def config(self) -> Config:
        """This entry's own config: the resolved one of its override set, with its prompt and seed."""
        assert self.cfg is not None, "plan_items resolves the config"
        cfg = copy.deepcopy(self.cfg)
        cfg.prompt = self.prompt
        if self.seed is not None:
            cfg.run.seed = self.seed
        return cfg

    def describe(self) -> Dict[str, Any]:
        return {"index": self.index, "line": self.line, "prompt": self.prompt, "name": self.name,
                "overrides": self.overrides, "seed": self.seed}


# -------------------------------------------------------------------------------------------- input
def _as_dotlist(overrides: Any, where: str) -> List[str]:
    """``{"run": {"steps": 5}}`` or ``["run.steps=5"]`` -> ``["run.steps=5"]``."""
    if overrides is None:
        return []
    if isinstance(overrides, list) and all(isinstance(o, str) for o in overrides):
        return list(overrides)
    if isinstance(overrides, dict):
        out: List[str] = []

        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out.append(f"{prefix}={json.dumps(obj)}")

        walk("", overrides)
        return out
    raise ConfigError(f"{where}: 'overrides' must be an object ({{\"run\": {{\"steps\": 600}}}}) or a list of "
                      "\"key=value\" strings")


def read_prompts(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """The entries of a prompts file (``.jsonl``: objects; otherwise one prompt per line), each with its line."""
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"prompts file {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path} is not UTF-8 text (byte {exc.start}); give a text file, one prompt per line") from None
    entries = []
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or (not jsonl and line.startswith("#")):
            continue
        where = f"{path}:{n}"
        if jsonl:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptError(f"{where}: not a JSON object ({exc.msg}); each line of a .jsonl file is "
                                  '{"prompt": "...", "seed": 0, "overrides": {...}}') from None
            if isinstance(obj, str):
                obj = {"prompt": obj}
            if not isinstance(obj, dict) or "prompt" not in obj:
                raise PromptError(f"{where}: each line needs an object with a \"prompt\"")
            unknown = sorted(set(obj) - _ITEM_KEYS)
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {unknown}; a line may hold {sorted(_ITEM_KEYS)}")
            entries.append({**obj, "line": n})
        else:
            if any(ord(c) < 32 and c != "\t" for c in line):
                raise PromptError(f"{where}: the line holds control characters; is {path} a text file of prompts?")
            entries.append({"prompt": line, "line": n})
    if not entries:
        raise PromptError(f"{path} holds no prompts (one per line; JSONL: one object per line)")
    return entries


def plan_items(entries: Sequence[Union[str, Dict[str, Any]]], config=None, overrides: Sequence[str] = (),
               source: str = "prompts") -> List[BatchItem]:
    """Check every entry and resolve its config, before any model is loaded (errors name the line).

    A config is resolved once per distinct set of overrides (the seed apart, which is checked and set directly):
    a 100,000-line file of prompts with a few override sets is checked in seconds, not hours. Entries that share a
    set share one resolved config until they run (:meth:`BatchItem.config` makes each its own copy)."""
    from .components import check_views  # the model folder's views, read without loading it

    items: List[BatchItem] = []
    names = set()
    resolved: Dict[tuple, Config] = {}
    for i, entry in enumerate(entries):
        e = {"prompt": entry} if isinstance(entry, str) else dict(entry)
        line = int(e.get("line", i + 1))
        where = f"{source}:{line}"
        try:
            unknown = sorted(set(e) - _ITEM_KEYS - {"line"})
            if unknown:
                raise ConfigError(f"unknown key(s) {unknown}; an entry may hold {sorted(_ITEM_KEYS)}")
            prompt = check_prompt(e.get("prompt"))
            item_over = _as_dotlist(e.get("overrides"), where)
            key = tuple(item_over)
            if key not in resolved:
                resolved[key] = resolve_config(config, [*overrides, *item_over])
                check_views(resolved[key])
            cfg = resolved[key]
            seed = e.get("seed")
            if seed is not None:
                if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                    raise ConfigError(f"'seed' must be a whole number >= 0, got {seed!r}")
                item_over.append(f"run.seed={seed}")
            name = e.get("name") or f"{i:04d}-{slug(prompt, 48)}"
            if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(PARTIAL):
                raise ConfigError(f"'name' {name!r} must be letters, digits, '.', '_' or '-' (a folder name, not a path)")
            if name in names:
                raise ConfigError(f"two entries are named {name!r}")
        except SplatgenError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        names.add(name)
        items.append(BatchItem(i, line, prompt, name, item_over, seed, cfg))
    return items


# -------------------------------------------------------------------------------------------- records
@contextmanager
def _records_lock(folder: Path) -> Iterator[None]:
    """The batch's records (manifest, summary, gallery) are written by one process at a time: an exclusive lock on
    ``folder/.records.lock`` (ranks on several machines share the folder)."""
    import fcntl

    fd = open_own(folder / ".records.lock", os.O_RDWR | os.O_CREAT)  # never through a link planted there
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _locked_append(folder: Path, name: str, text: str) -> None:
    """Append to ``folder/name`` under the records lock (never through a symbolic link: :func:`fileio.open_own`)."""
    with _records_lock(folder):
        with open_own_text(folder / name) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def read_manifest(out: Path) -> List[Dict[str, Any]]:
    path = Path(out) / MANIFEST
    if path.is_symlink() or not path.is_file():  # a link is not this batch's manifest (the next append replaces it)
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # a line cut by a crash of an old version (never written by this one: whole-line appends)
        if isinstance(row, dict) and isinstance(row.get("name"), str):  # anything else is not a record of ours
            rows.append(row)
    return rows


def item_states(out: Path, items: Sequence[BatchItem]) -> List[Dict[str, Any]]:
    """One row per item: its state on disk (finished / running / interrupted / waiting) and its latest record."""
    latest: Dict[str, Dict[str, Any]] = {}
    attempts: Dict[str, int] = {}
    for row in read_manifest(out):
        latest[row["name"]] = row
        if row.get("status") in ("done", "failed"):
            attempts[row["name"]] = attempts.get(row["name"], 0) + 1
    rows = []
    for it in items:
        final, staging = out / it.name, partial_path(out / it.name)
        rec = latest.get(it.name, {})
        if final.is_dir():
            status = "done"
        elif staging.is_dir():
            status = rec.get("status", "interrupted") if rec.get("status") == "failed" else "started"
        else:
            status = rec.get("status", "waiting") if rec.get("status") == "failed" else "waiting"
        rows.append({"index": it.index, "name": it.name, "prompt": it.prompt, "status": status,
                     "attempts": attempts.get(it.name, 0), "seconds": rec.get("seconds"),
                     "metrics": rec.get("metrics") or {}, "error": rec.get("error") if status != "done" else None,
                     "files": rec.get("files", []), "folder": it.name if status == "done" else None})
    return rows


def write_summary(out: Path, items: Sequence[BatchItem], gallery: bool = True) -> Dict[str, int]:
    """Rewrite ``summary.csv`` (and ``index.html``) from the manifest and the folders; returns counts by status.

    Read and written under the records lock, so of several ranks finishing together the last one's summary, which
    sees every other rank's results, is the one that stays."""
    with _records_lock(out):
        return _write_summary(out, items, gallery)


def _write_summary(out: Path, items: Sequence[BatchItem], gallery: bool) -> Dict[str, int]:
    rows = item_states(out, items)
    cols = ["index", "name", "prompt", "status", "attempts", "seconds", "num_gaussians", "iou", "psnr_fg", "janus",
            "r_precision", "folder", "error"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        m = r["metrics"]
        # Text cells neutralised against spreadsheet formulas (a prompt may begin with '=' or '@').
        w.writerow([r["index"], spreadsheet_cell(r["name"]), spreadsheet_cell(r["prompt"]), r["status"], r["attempts"],
                    r["seconds"], m.get("num_gaussians"), m.get("iou"), m.get("psnr_fg"), m.get("janus"),
                    m.get("r_precision"), spreadsheet_cell(r["folder"] or ""), spreadsheet_cell(r["error"] or "")])
    atomic_write_text(out / SUMMARY_CSV, buf.getvalue())
    if gallery:
        atomic_write_text(out / GALLERY, _gallery_html(out, rows))
    counts: Dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def _gallery_html(out: Path, rows: List[Dict[str, Any]]) -> str:
    cards = []
    for r in rows:
        e = html.escape
        media = ""
        if r["status"] == "done":
            folder = out / r["name"]
            if (folder / "turntable.mp4").is_file():
                media = (f'<video src="{e(r["name"])}/turntable.mp4" autoplay loop muted playsinline '
                         f'poster="{e(r["name"])}/previews.png"></video>')
            elif (folder / "previews.png").is_file():
                media = f'<img src="{e(r["name"])}/previews.png" alt="{e(r["prompt"])}">'
        m = r["metrics"]
        facts = [f"{r['seconds']:.1f} s" if isinstance(r["seconds"], (int, float)) else ""]
        for k in ("iou", "psnr_fg", "janus"):
            if isinstance(m.get(k), (int, float)):
                facts.append(f"{k} {m[k]:.3f}")
        err = f'<p class="error">{e(short(str(r["error"]), 300, quote=False))}</p>' if r["error"] else ""
        link = f'<a href="{e(r["name"])}/">{e(r["name"])}</a>' if r["folder"] else e(r["name"])
        cards.append(f'<figure class="{e(r["status"])}">{media}<figcaption><b>{e(r["prompt"])}</b><br>{link} · '
                     f'{e(r["status"])} {" · ".join(f for f in facts if f)}{err}</figcaption></figure>')
    done = sum(1 for r in rows if r["status"] == "done")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>splatgen batch: {done}/{len(rows)} done</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 1em; }}
figure {{ margin: 0; background: white; border: 1px solid #ddd; border-radius: 6px; padding: .5em; }}
figure img, figure video {{ width: 100%; display: block; }}
figure.failed {{ border-color: #c33; }} .error {{ color: #c33; font-size: .85em; }}
figcaption {{ font-size: .9em; margin-top: .4em; }}
</style></head><body><h1>splatgen batch: {done} of {len(rows)} done</h1><main>
{chr(10).join(cards)}
</main></body></html>
"""


# -------------------------------------------------------------------------------------------- ranks
@dataclass
class Rank:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False


def _rank_from_env() -> Rank:
    """This process's place under torchrun (RANK/WORLD_SIZE/LOCAL_RANK, set by torch.distributed's launcher); a
    single process otherwise.

    No process group is formed: the ranks share work through the run folders' claims and never need a
    collective. (An earlier version joined a gloo group for one final barrier; after torchrun restarted the
    workers of a group that lost one, gloo's connectFullMesh failed or hung on 2 of 3 tries with torch 2.14,
    benchmarks/perf/batch_scaling.py --kill-test.)"""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank()
    return Rank(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")), True)


def _order(n: int, rank: Rank) -> List[int]:
    """Own share first (every world_size-th prompt from ``rank``), then the others' prompts from the end of
    their shares, where the owner gets last."""
    own = list(range(rank.rank, n, rank.world_size))
    rest = [i for i in reversed(range(n)) if i % rank.world_size != rank.rank]
    return own + rest


# -------------------------------------------------------------------------------------------- running
def _guidance_key(cfg: Config, device: torch.device) -> str:
    keep = {"guidance": dataclasses.asdict(cfg.guidance), "device": str(device)}
    if cfg.guidance.type == "world":
        keep["camera"] = dataclasses.asdict(cfg.camera)
    for k in ("negative_prompt", "guidance_scale", "guidance_scale_milestones", "view_dependent", "weighting", "grad_clip"):
        keep["guidance"].pop(k, None)  # used per prompt, not by the loaded model
    return json.dumps(keep, sort_keys=True)


def _batch_fingerprint(items: Sequence[BatchItem], config, overrides: Sequence[str]) -> Dict[str, Any]:
    desc = {"items": [(it.prompt, it.name, it.overrides) for it in items],
            "config": [str(c) for c in ([config] if isinstance(config, (str, Path)) else (config or []))],
            "overrides": list(overrides)}
    return {"sha256": hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest(),
            "prompts": len(items), "config": desc["config"], "overrides": desc["overrides"]}


def _check_batch_folder(out: Path, fingerprint: Dict[str, Any], source: str) -> None:
    info = out / BATCH_INFO
    if info.is_file():
        try:
            old = json.loads(info.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
            old = None
        if not isinstance(old, dict):
            raise RunDirError(f"{info} is damaged; move the folder away or fix it")
        if old.get("sha256") != fingerprint["sha256"]:
            raise RunDirError(
                f"--out {out} holds another batch ({old.get('prompts')} prompts from {old.get('source')}, config "
                f"{old.get('config')} {old.get('overrides')}); rerun that batch there, or choose a new --out for this one"
            )
        return
    if out.is_dir() and any(p.name != ".records.lock" for p in out.iterdir()):
        raise RunDirError(f"--out {out} is not empty and holds no batch; choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    write_json(info, {**fingerprint, "source": source, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


#: the scores a prompt's "done" line shows, when its run has them (procedural-world prompts)
_SCORES = {"iou": "IoU", "psnr_fg": "PSNR", "janus": "Janus", "r_precision": "R-precision"}


class PromptLines:
    """One log line per prompt as it starts and as it ends, where no progress bar over the prompts shows (stderr
    not a terminal: a log file, CI, Slurm): ``[k/n] started 'prompt'``, ``[k/n] done 'prompt' in 12.3 s: IoU
    0.91, ..., 3712 Gaussians; 3 left, ETA 4 min 10 s``, ``[k/n] failed ...`` (k: the prompt's place in the batch). A
    failure is logged (a warning) even where the bar shows. The ETA is this process's mean seconds per finished
    prompt times the prompts left, shared among the ranks."""

    def __init__(self, items: Sequence[BatchItem], out: Path, rank: Rank, enabled: bool, retries: int):
        self.n, self.rank, self.enabled, self.retries = len(items), rank, enabled, retries
        self.left = sum(1 for it in items if not (out / it.name).is_dir()) if enabled else 0
        self.seconds: List[float] = []

    def _say(self, level: int, it: BatchItem, text: str) -> None:
        who = f"rank {self.rank.rank}: " if self.rank.distributed else ""
        log.log(level, "%s[%d/%d] %s", who, it.index + 1, self.n, text)

    def started(self, it: BatchItem, attempt: int) -> None:
        if self.enabled:
            again = f" (attempt {attempt + 1} of {self.retries + 1})" if attempt else ""
            self._say(logging.INFO, it, f"started {short(it.prompt, 60)}{again}")

    def done(self, it: BatchItem, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.seconds.append(record["seconds"])
        self.left -= 1
        m = record.get("metrics", {})
        scores = [f"{label} {m[k]:.3g}" for k, label in _SCORES.items() if isinstance(m.get(k), (int, float))]
        scores.append(f"{m['num_gaussians']} Gaussians")
        self._say(logging.INFO, it, f"done {short(it.prompt, 60)} in {record['seconds']:.1f} s: "
                                    f"{', '.join(scores)}; {self._eta()}")

    def failed(self, it: BatchItem, attempt: int, seconds: float, error: str) -> None:
        last = attempt >= self.retries
        if last and self.enabled:
            self.left -= 1
        what = "giving up" if last else "retrying"
        self._say(logging.WARNING, it, f"failed {short(it.prompt, 60)} after {seconds:.1f} s (attempt {attempt + 1} "
                                       f"of {self.retries + 1}, {what}): {error}")

    def _eta(self) -> str:
        from .trainer import format_seconds

        if self.left <= 0:
            return "none left"
        each = sum(self.seconds) / len(self.seconds)
        return f"{self.left} left, ETA {format_seconds(each * self.left / self.rank.world_size)}"


def generate_many(
    prompts: Sequence[Union[str, Dict[str, Any]]],
    out_dir: Union[str, Path],
    config=None,
    overrides: Sequence[str] = (),
    retries: int = 2,
    gallery: bool = True,
    source: str = "prompts",
    progress: Optional[bool] = None,
) -> Dict[str, Any]:
    """Generate every prompt into its own folder under ``out_dir`` (see the module docstring).

    Args:
        prompts: prompt strings, or dicts ``{"prompt", "seed", "overrides", "name"}``.
        config, overrides: as for :func:`splatgen.generate`, for every prompt (an entry's own overrides win).
        retries: attempts after a failure, per prompt and invocation.
        progress: a progress bar over prompts (default: when stderr is a terminal, on rank 0).

    Returns:
        ``{"done": n, "failed": n, ..., "rows": [per-prompt state]}`` as this process saw it at its end.
    """
    out = Path(out_dir)
    items = plan_items(prompts, config, overrides, source)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file; give a folder")
    rank = _rank_from_env()
    if rank.rank != 0:  # rank 0 checks the folder and writes batch.json; the others then check they match it
        deadline = time.monotonic() + 300.0
        while not (out / BATCH_INFO).is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not (out / BATCH_INFO).is_file():
            raise RunDirError(f"rank {rank.rank}: {out / BATCH_INFO} did not appear within 300 s; rank 0 did not "
                              "start the batch (see its error)")
    _check_batch_folder(out, _batch_fingerprint(items, config, overrides), source)
    device_override = None
    if torch.cuda.is_available() and rank.world_size > 1:
        torch.cuda.set_device(rank.local_rank)
        device_override = f"cuda:{rank.local_rank}"
    host = socket.gethostname()
    guidances: Dict[str, Any] = {}
    order = _order(len(items), rank)
    show = progress if progress is not None else (rank.rank == 0 and os.isatty(2))
    bar = None
    if show:
        from tqdm import tqdm

        done0 = sum(1 for it in items if (out / it.name).is_dir())
        bar = tqdm(total=len(items), initial=done0, desc="prompts", unit="prompt", dynamic_ncols=True)
    lines = PromptLines(items, out, rank, enabled=bar is None and not os.isatty(2), retries=retries)
    last_summary = time.monotonic()
    failing = True  # until the loop ends normally: a summary that cannot be written then must not hide why
    try:
        for i in order:
            it = items[i]
            if (out / it.name).is_dir():
                continue
            cfg = it.config()
            if device_override is not None and cfg.run.device == "auto":
                cfg.run.device = device_override
            for attempt in range(retries + 1):
                status = _attempt(it, cfg, out, attempt, guidances, rank, host, lines)
                if status in ("done", "taken"):
                    break
            if bar is not None:
                bar.n = sum(1 for x in items if (out / x.name).is_dir())
                bar.refresh()
            # summary.csv and index.html follow the prompts as they finish (at most every SUMMARY_EVERY_S: each
            # rewrite reads the whole manifest), and are written whole at the end.
            if time.monotonic() - last_summary >= SUMMARY_EVERY_S:
                write_summary(out, items, gallery)
                last_summary = time.monotonic()
        failing = False
    finally:
        if bar is not None:
            bar.close()
        for g in guidances.values():
            g.release()
        if failing:
            try:
                write_summary(out, items, gallery)
            except SplatgenError as exc:  # e.g. the disk that stopped the batch is full: its own error goes on
                log.warning("batch %s: %s", out, exc)
            counts = {}
        else:
            counts = write_summary(out, items, gallery)
    rows = item_states(out, items)
    log.info("batch %s: %s", out, ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return {**counts, "rows": rows}


def _attempt(it: BatchItem, cfg: Config, out: Path, attempt: int, guidances: Dict[str, Any], rank: Rank,
             host: str, lines: PromptLines) -> str:
    """Run one attempt of one prompt: 'done', 'failed', or 'taken' (another process holds or finished it)."""
    from .components import build_guidance
    from .devices import resolve_device

    final = out / it.name
    try:
        # A first attempt continues an interrupted run (same config); a retry after a failure starts afresh.
        run = RunFolder.claim(final, resume=attempt == 0, overwrite=attempt > 0)
    except RunDirError:
        return "taken"  # being written by another rank, or finished meanwhile
    lines.started(it, attempt)
    t0 = time.perf_counter()
    record: Dict[str, Any] = {"index": it.index, "name": it.name, "prompt": it.prompt, "attempt": attempt + 1,
                              "rank": rank.rank, "host": host, "seed": cfg.run.seed}
    try:
        device = resolve_device(cfg.run.device)
        key = _guidance_key(cfg, device)
        if key not in guidances:
            for old in guidances.values():  # one model on the device at a time
                old.release()
            guidances.clear()
            guidances[key] = build_guidance(cfg, device, keep_text_encoder=True)
        guidance = guidances[key]
        guidance.prepare_text(cfg.prompt, cfg.guidance.negative_prompt,
                              uses_view_words(guidance, cfg.guidance.view_dependent))
        result = run_generation(cfg, run, guidance=guidance, t0=t0, device=device)
        files = sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file())
        metrics = dict(result.metrics or {})
        metrics.setdefault("num_gaussians", result.num_gaussians)
        record.update(status="done", seconds=round(time.perf_counter() - t0, 3), train_seconds=round(result.seconds, 3),
                      files=files, metrics={k: v for k, v in metrics.items() if not isinstance(v, (dict, list))})
        _locked_append(out, MANIFEST, json_line(record) + "\n")
        lines.done(it, record)
        return "done"
    except (RunInterrupted, KeyboardInterrupt):
        raise
    except (SplatgenError, torch.OutOfMemoryError, RuntimeError, ValueError) as exc:
        # NaN/Inf, out of memory, a model that fails: recorded, and the batch goes on. (A RuntimeError from torch
        # is most often memory; the traceback's last lines go to the record for the bug report.)
        kind = "out of memory" if isinstance(exc, torch.OutOfMemoryError) else type(exc).__name__
        tb = "" if isinstance(exc, SplatgenError) else " | " + " / ".join(traceback.format_exc().strip().splitlines()[-3:])
        record.update(status="failed", seconds=round(time.perf_counter() - t0, 3),
                      error=f"{kind}: {short(str(exc), 500, quote=False)}{tb}")
        _locked_append(out, MANIFEST, json_line(record) + "\n")
        lines.failed(it, attempt, record["seconds"], short(str(exc), 200, quote=False))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if isinstance(exc, NonFiniteError):
            guidances.clear()  # the guidance may hold a poisoned state: load it again
        return "failed"


def run_batch(prompts_file: Union[str, Path], out_dir: Union[str, Path], config=None, overrides: Sequence[str] = (),
              retries: int = 2, gallery: bool = True) -> Dict[str, Any]:
    """``splatgen batch``: :func:`generate_many` on the prompts of a file."""
    if retries < 0:
        raise ConfigError(f"--retries={retries} must be >= 0")
    return generate_many(read_prompts(prompts_file), out_dir, config, overrides, retries, gallery,
                         source=str(prompts_file))
