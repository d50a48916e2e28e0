"""Training of the bundled prior, phase by phase, each a time-budgeted, resumable loop.

    python -m prior_training.train clip      --out RUN --minutes 1.5      # text-encoder CLIP (prior's data)
    python -m prior_training.train evaluator --out RUN --minutes 1.0      # evaluator CLIP (its own data)
    python -m prior_training.train unet      --out RUN --minutes 6        # the diffusion model (needs RUN/clip)
    python -m prior_training.train export    --out RUN --to PRIOR         # the shipped folder
    python -m prior_training.train all       --out RUN --minutes 8.5 --to PRIOR   # the three, then export
    python -m prior_training.train import    --out RUN --from PRIOR       # continue from a shipped folder
    python -m prior_training.train mvunet    --out RUN --minutes 5        # the multi-view prior (needs RUN/unet)
    python -m prior_training.train export-mv --out RUN --from PRIOR --to PRIOR_MV

``--tiny`` trains the test-size models (32x32) on the CPU in seconds. ``benchmarks/prior/train_on_gpu.sh``
runs ``all`` on the GPU machine and packs what comes back.

Run folder: ``RUN/<phase>/checkpoint.pt`` (everything needed to resume exactly: float32 weights, AdamW
state, EMA, step, elapsed time, the RNG states of the batch sampler, the noise and, without worker
processes, of the data stream; written every ``--checkpoint-minutes`` and at the end), ``RUN/<phase>/log.jsonl``
and, for the CLIPs, ``RUN/<phase>/model/`` (the CLIP folder). ``--resume`` continues a phase from its
checkpoint for ``--minutes`` more; without it an existing checkpoint is refused.

Carrying between machines. A full UNet checkpoint (~250 MB) does not fit what travels to and from the GPU
machine, so the portable checkpoint is the exported prior itself (fp16 EMA UNet and both CLIPs, ~45 MiB):
``import`` turns it back into a run folder whose UNet restarts from the EMA weights with a fresh AdamW
(warm-up again) and the EMA, step counts and times carried on. Resuming from ``checkpoint.pt`` on the same
machine is exact (up to the data workers' streams, which are re-seeded from the step).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from splatgen.errors import SplatgenError
from splatgen.guidance.multiview import SPEC_FILE
from splatgen.prior import check_prior_folder
from splatgen.world.captions import CaptionTable

from .clip import (
    BPE_NAME,
    CLIP_CONFIG,
    EVALUATOR_FOLDER,
    TEXT_ENCODER_FOLDER,
    TINY_CLIP_CONFIG,
    OpenCLIPPromptEncoder,
    build_clip,
    load_clip_folder,
    model_config,
    save_clip_folder,
    world_tokenizer,
    write_world_bpe,
)
from .data import HELD_OUT_PAIRS, PLAIN, ViewPool, ViewProducer, WorldViews, fill_pool
from .unet import EMA, TINY_UNET_CONFIG, UNET_CONFIG, diffusion_loss, make_scheduler, make_unet

PHASES = ("clip", "evaluator", "unet")
#: seed offsets of the phases (the evaluator differs from the text encoder by seed and by data stream).
PHASE_SEED = {"clip": 0, "evaluator": 1, "unet": 2}


@dataclass(frozen=True)
class Profile:
    """Sizes of one training setup (the shipped prior or the test-size one)."""

    name: str
    resolution: int
    clip_config: Dict[str, Any]
    unet_config: Dict[str, Any]
    objects_per_chunk: int
    views_per_object: int
    supersample: int
    pool_capacity: int
    pool_min: int
    clip_batch: int
    unet_batch: int
    clip_lr: float
    unet_lr: float
    clip_warmup: int
    unet_warmup: int


FULL = Profile("full", 64, CLIP_CONFIG, UNET_CONFIG, 8, 16, 2, 65536, 4096, 256, 256, 5e-4, 3e-4, 200, 300)
TINY = Profile("tiny", 32, TINY_CLIP_CONFIG, TINY_UNET_CONFIG, 2, 4, 1, 512, 32, 16, 8, 2e-3, 1e-3, 2, 2)


@dataclass
class TrainOptions:
    out: Path
    minutes: float = 1.0
    steps: int = 0
    seed: int = 0
    batch: int = 0
    lr: float = 0.0
    workers: int = -1
    resume: bool = False
    tiny: bool = False
    device: str = "auto"
    compile: bool = False
    log_every: int = 50
    checkpoint_minutes: float = 3.0
    deadline: float = 0.0
    p_uncond: float = 0.12
    p_plain: float = 0.1
    p_no_colour: float = 0.05
    ema_decay: float = 0.999
    snr_gamma: float = 5.0
    cooldown: float = 0.2

    @property
    def profile(self) -> Profile:
        return TINY if self.tiny else FULL


# ------------------------------------------------------------------------------------------------ helpers
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _setup_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _workers(opts: TrainOptions, device: torch.device) -> int:
    if opts.workers >= 0:
        return opts.workers
    return max(1, (os.cpu_count() or 4) - 3) if device.type == "cuda" else 0


def _save(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load(path: Path) -> Dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def _cuda_rng(device: torch.device) -> Optional[torch.Tensor]:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


class Logger:
    """JSON lines in ``path`` and a short line on stdout."""

    def __init__(self, path: Path, phase: str) -> None:
        self.path = path
        self.phase = phase

    def __call__(self, record: Dict[str, Any], echo: bool = True) -> None:
        record = {"phase": self.phase, "time": round(time.time(), 1), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if echo:
            items = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items() if k != "time" and not isinstance(v, (list, dict))
            )
            print(items, flush=True)


class Clock:
    """The phase's time budget: ``minutes`` of wall time from now, never past ``deadline`` (epoch seconds,
    0: none), or ``steps`` steps when given."""

    def __init__(self, minutes: float, steps: int = 0, deadline: float = 0.0) -> None:
        self.t0 = time.time()
        self.end = self.t0 + 60.0 * minutes
        if deadline > 0:
            self.end = min(self.end, deadline)
        self.steps = int(steps)

    def elapsed(self) -> float:
        return time.time() - self.t0

    def fraction(self, steps_done: int) -> float:
        if self.steps > 0:
            return min(1.0, steps_done / self.steps)
        return min(1.0, self.elapsed() / max(1e-6, self.end - self.t0))

    def done(self, steps_done: int) -> bool:
        if self.steps > 0:
            return steps_done >= self.steps
        return time.time() >= self.end


def start_phase(opts: "TrainOptions", phase: str):
    """What every phase opens with: its device (set up), folder ``RUN/<phase>``, checkpoint path (an existing
    checkpoint is refused without ``--resume``), log and clock. Returns (device, folder, checkpoint, log, clock)."""
    device = _device(opts.device)
    pdir = Path(opts.out) / phase
    pdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = pdir / "checkpoint.pt"
    if ckpt_path.exists() and not opts.resume:
        raise SplatgenError(f"{ckpt_path} exists: pass --resume to continue training it, or choose another --out")
    log = Logger(pdir / "log.jsonl", phase)
    clock = Clock(opts.minutes, opts.steps, opts.deadline)
    _setup_device(device)
    return device, pdir, ckpt_path, log, clock


def lr_factor(opt_steps: int, warmup: int, fraction: float, cooldown: float) -> float:
    """Linear warm-up over ``warmup`` optimizer steps, then constant, then (``cooldown`` > 0) linear decay to
    zero over the last ``cooldown`` fraction of the budget."""
    f = min(1.0, (opt_steps + 1) / max(1, warmup))
    if cooldown > 0:
        f *= min(1.0, max(0.0, (1.0 - fraction) / cooldown))
    return f


def _views(opts: TrainOptions, seed: int, stream: str, include_held_out: bool) -> WorldViews:
    p = opts.profile
    return WorldViews(
        device="cpu",
        resolution=p.resolution,
        seed=seed,
        stream=stream,
        objects_per_chunk=p.objects_per_chunk,
        views_per_object=p.views_per_object,
        supersample=p.supersample,
        include_held_out=include_held_out,
    )


#: pools up to this size are saved in checkpoints when the views are rendered in-process (exact resumes).
POOL_CHECKPOINT_BYTES = 64 << 20


def _start_data(opts: TrainOptions, views: WorldViews, device: torch.device, seed: int, log: Logger, pool_state: Optional[Dict[str, Any]] = None):
    """A producer (worker processes on a GPU machine, in-process otherwise) and a filled pool (restored
    from ``pool_state`` when the checkpoint holds one)."""
    p = opts.profile
    workers = _workers(opts, device)
    producer = ViewProducer(views, workers=workers, seed=seed, fallback_device=device)
    pool = ViewPool(p.pool_capacity, p.resolution, device)
    t0 = time.time()
    if pool_state is not None and workers == 0:
        pool.load_state_dict(pool_state)
    else:
        fill_pool(pool, producer, p.pool_min)
    log({"event": "data", "workers": workers, "pool": pool.size, "fill_s": round(time.time() - t0, 2)})
    return producer, pool


def _environment() -> Dict[str, Any]:
    import diffusers

    env = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__}
    try:
        import open_clip

        env["open_clip"] = open_clip.__version__
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


# ------------------------------------------------------------------------------------------------ CLIP
def _clip_param_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """open_clip's convention: no weight decay on gains, biases, embeddings' positions and the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name or "positional_embedding" in name or "class_embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _pool_checkpoint(producer, pool) -> Optional[Dict[str, Any]]:
    """The pool's state for a checkpoint: kept only with in-process rendering and when it is small enough."""
    return pool.state_dict() if producer.workers == 0 and pool.nbytes <= POOL_CHECKPOINT_BYTES else None


class _Session:
    """The bookkeeping both training phases share within one session: step and sample counters, a log line
    every ``log_every`` steps (loss, rates, the phase's own ``extra`` fields), a checkpoint every
    ``checkpoint_minutes``, and the close (final loss, seconds, views rendered, last checkpoint)."""

    def __init__(self, state: Dict[str, Any], producer, pool, opts: "TrainOptions", log: Callable[[Dict[str, Any]], None],
                 checkpoint: Callable[[], None]):
        self.state, self.producer, self.pool, self.opts, self.log, self.checkpoint = state, producer, pool, opts, log, checkpoint
        self.t0 = self.last_ckpt = time.time()
        self.step0 = state["step"]
        self.rendered0 = producer.rendered  # views of the initial fill are not counted in views_per_s
        self.seconds0 = state["seconds"]
        self.last_loss = math.nan

    def fill_pool(self) -> None:
        """Move the views the producer has rendered since the last call into the pool."""
        for chunk in self.producer.poll(max_chunks=32):
            self.pool.add(chunk)

    @property
    def steps(self) -> int:
        """Steps taken in this session."""
        return self.state["step"] - self.step0

    def after_step(self, loss: torch.Tensor, n_samples: int, extra: Callable[[], Dict[str, Any]]) -> None:
        st = self.state
        st["step"] += 1
        st["opt_steps"] += 1
        st["samples"] += n_samples
        if st["step"] % self.opts.log_every == 0:
            self.last_loss = float(loss.detach())
            dt = time.time() - self.t0
            self.log({
                "step": st["step"], "loss": self.last_loss, **extra(),
                "steps_per_s": self.steps / dt, "samples_per_s": self.steps * n_samples / dt,
                "views_per_s": (self.producer.rendered - self.rendered0) / dt, "reuse": self.pool.reuse,
            })
        if time.time() - self.last_ckpt > 60.0 * self.opts.checkpoint_minutes:
            st["seconds"] = self.seconds0 + time.time() - self.t0
            self.checkpoint()
            self.last_ckpt = time.time()

    def close(self, loss: Optional[torch.Tensor]) -> float:
        """Stop the data producer, write the last checkpoint; returns the final loss (NaN if no step ran)."""
        if self.steps > 0 and loss is not None:
            self.last_loss = float(loss.detach())
        self.state["seconds"] = self.seconds0 + time.time() - self.t0
        self.state["views_rendered"] += self.producer.rendered
        self.producer.close()
        self.checkpoint()
        return self.last_loss


def train_clip(opts: TrainOptions, role: str = "clip") -> Dict[str, Any]:
    """Train a CLIP contrastively (open_clip's ``ClipLoss``) on batches of views with pairwise different
    captions. ``role='clip'``: the text encoder, on the prior's data (held-out pairs excluded);
    ``role='evaluator'``: on the evaluator's stream, all pairs included. Returns the phase's summary."""
    import open_clip

    assert role in ("clip", "evaluator")
    prof = opts.profile
    device, pdir, ckpt_path, log, clock = start_phase(opts, role)
    seed = opts.seed * 10 + PHASE_SEED[role]

    bpe = write_world_bpe(pdir / BPE_NAME)
    context_length = prof.clip_config["text_cfg"]["context_length"]
    tokenizer = world_tokenizer(bpe, context_length)
    cfg = model_config(prof.clip_config, tokenizer.vocab_size)
    torch.manual_seed(seed)
    model = build_clip(cfg).to(device)
    lr = opts.lr or prof.clip_lr
    batch = opts.batch or prof.clip_batch
    opt = torch.optim.AdamW(_clip_param_groups(model, 0.1), lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=device.type == "cuda")
    batch_gen = torch.Generator().manual_seed(seed + 101)
    state = {"step": 0, "opt_steps": 0, "seconds": 0.0, "samples": 0, "views_rendered": 0, "sessions": 0}
    views = _views(opts, seed, "prior" if role == "clip" else "evaluator", role == "evaluator")

    ckpt = _load(ckpt_path) if ckpt_path.exists() else None
    if ckpt is not None:
        if ckpt.get("profile") != prof.name:
            raise SplatgenError(f"{ckpt_path} holds a {ckpt.get('profile')!r} run; this is a {prof.name!r} one (--tiny?)")
        model.load_state_dict(ckpt["model"])
        state.update(ckpt["state"])
        if ckpt.get("optimizer") is not None:
            opt.load_state_dict(ckpt["optimizer"])
        else:
            state["opt_steps"] = 0  # a fresh optimizer warms up again
        if "batch" in ckpt.get("rng", {}):
            batch_gen.set_state(ckpt["rng"]["batch"])
            torch.set_rng_state(ckpt["rng"]["torch"])
        else:  # imported: no RNG states, draw new streams
            batch_gen.manual_seed(seed + 101 + 7919 * state["step"])
            views.generator.manual_seed(seed + 7919 * state["step"])
        if ckpt.get("rng", {}).get("views") and _workers(opts, device) == 0:
            views.load_state_dict(ckpt["rng"]["views"])
    state["sessions"] += 1

    producer, pool = _start_data(opts, views, device, seed * 1_000_003 + state["step"], log, (ckpt or {}).get("pool"))
    table = CaptionTable()
    tokens = tokenizer(table.texts).to(device)
    loss_fn = open_clip.ClipLoss()
    log({"event": "start", "params": sum(p.numel() for p in model.parameters()), "batch": batch, "lr": lr, "step": state["step"], "device": str(device)})

    def checkpoint() -> None:
        rng = {"batch": batch_gen.get_state(), "torch": torch.get_rng_state(), "views": producer.state_dict()}
        pool_state = _pool_checkpoint(producer, pool)
        _save(
            ckpt_path,
            {"profile": prof.name, "model_cfg": cfg, "model": model.state_dict(), "optimizer": opt.state_dict(), "state": state, "rng": rng, "pool": pool_state},
        )

    model.train()
    session = _Session(state, producer, pool, opts, log, checkpoint)
    loss = None
    while not clock.done(session.steps):
        session.fill_pool()
        vb = pool.sample_distinct(batch, batch_gen)
        images = vb.float_images()
        text = tokens[table.caption_ids(vb.pair_ids, vb.dir_ids)]
        f = lr_factor(state["opt_steps"], prof.clip_warmup, clock.fraction(session.steps), opts.cooldown)
        for g in opt.param_groups:
            g["lr"] = lr * f
        with _autocast(device):
            img_f = model.encode_image(images, normalize=True)
            txt_f = model.encode_text(text, normalize=True)
        loss = loss_fn(img_f.float(), txt_f.float(), model.logit_scale.exp())  # logits in float32
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

        def clip_extra() -> Dict[str, Any]:
            with torch.no_grad():
                acc = float((img_f.float() @ txt_f.float().T).argmax(1).eq(torch.arange(images.shape[0], device=device)).float().mean())
            return {"batch_acc": acc, "logit_scale": float(model.logit_scale.detach().exp()), "lr": lr * f}

        session.after_step(loss, images.shape[0], clip_extra)
    last_loss = session.close(loss)
    info = {
        "role": "text_encoder" if role == "clip" else "evaluator",
        "steps": state["step"],
        "train_seconds": round(state["seconds"], 1),
        "samples_seen": state["samples"],
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "data_stream": views.stream,
        "held_out_pairs": [list(p) for p in HELD_OUT_PAIRS],
        "held_out_in_training": role == "evaluator",
        "params": sum(p.numel() for p in model.parameters()),
    }
    save_clip_folder(model, pdir / "model", cfg, bpe, info)
    summary = {"event": "end", **info, "final_loss": last_loss, "views_rendered": state["views_rendered"], "reuse": pool.reuse}
    log(summary)
    return summary


# ------------------------------------------------------------------------------------------------ UNet
def _caption_ids(table: CaptionTable, pair_ids: torch.Tensor, dir_ids: torch.Tensor, opts: TrainOptions, gen: torch.Generator) -> torch.Tensor:
    """Caption ids of a batch with the training variants: no direction (``p_plain``), no colour
    (``p_no_colour``) and the empty caption (``p_uncond``, classifier-free guidance's caption dropout)."""
    n = pair_ids.shape[0]
    u = torch.rand(3, n, generator=gen).to(pair_ids.device)
    dirs = torch.where(u[0] < opts.p_plain, torch.full_like(dir_ids, PLAIN), dir_ids)
    ids = table.caption_ids(pair_ids, dirs, no_colour=u[1] < opts.p_no_colour)
    return torch.where(u[2] < opts.p_uncond, torch.full_like(ids, table.uncond_id), ids)


def caption_embeddings(clip_folder: Path, device: torch.device, table: Optional[CaptionTable] = None) -> torch.Tensor:
    """[captions, L, D] text features of every caption of the table (the last one is "", the unconditional),
    computed with :class:`OpenCLIPPromptEncoder` exactly as at generation time."""
    table = table or CaptionTable()
    enc = OpenCLIPPromptEncoder.from_folder(clip_folder, device)
    emb = enc.encode(table.texts)
    enc.release()
    return emb


def train_unet(opts: TrainOptions) -> Dict[str, Any]:
    """Train the diffusion model on the prior's data, conditioned on the frozen text encoder of ``RUN/clip``."""
    prof = opts.profile
    out = Path(opts.out)
    device, _, ckpt_path, log, clock = start_phase(opts, "unet")
    clip_dir = out / "clip" / "model"
    if not clip_dir.is_dir():
        raise SplatgenError(f"{clip_dir} does not exist: train the text encoder first (python -m prior_training.train clip --out {out})")
    seed = opts.seed * 10 + PHASE_SEED["unet"]

    torch.manual_seed(seed)
    table = CaptionTable()
    emb_table = caption_embeddings(clip_dir, device, table)
    cfg = dict(prof.unet_config, cross_attention_dim=int(emb_table.shape[-1]))
    unet = make_unet(cfg, seed=seed).to(device)
    ema = EMA(unet, opts.ema_decay)
    lr = opts.lr or prof.unet_lr
    batch = opts.batch or prof.unet_batch
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0, fused=device.type == "cuda")
    alphas_cumprod = make_scheduler().alphas_cumprod.to(device)
    batch_gen = torch.Generator().manual_seed(seed + 101)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 202)
    state = {"step": 0, "opt_steps": 0, "seconds": 0.0, "samples": 0, "views_rendered": 0, "sessions": 0}
    views = _views(opts, seed, "prior", False)

    ckpt = _load(ckpt_path) if ckpt_path.exists() else None
    if ckpt is not None:
        if ckpt.get("profile") != prof.name:
            raise SplatgenError(f"{ckpt_path} holds a {ckpt.get('profile')!r} run; this is a {prof.name!r} one (--tiny?)")
        unet.load_state_dict(ckpt["unet"])
        ema.load_state_dict(ckpt["ema"])
        fresh_opt = ckpt.get("optimizer") is None
        if not fresh_opt:
            opt.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])
        if fresh_opt:
            state["opt_steps"] = 0
        rng = ckpt.get("rng", {})
        if "batch" in rng:
            batch_gen.set_state(rng["batch"])
            torch.set_rng_state(rng["torch"])
            if rng.get("noise_device") == str(device):
                noise_gen.set_state(rng["noise"])
            if rng.get("views") and _workers(opts, device) == 0:
                views.load_state_dict(rng["views"])
        else:  # imported: no RNG states, draw new streams (not the first session's again)
            batch_gen.manual_seed(seed + 101 + 7919 * state["step"])
            noise_gen.manual_seed(seed + 202 + 7919 * state["step"])
            views.generator.manual_seed(seed + 7919 * state["step"])
    state["sessions"] += 1

    producer, pool = _start_data(opts, views, device, seed * 1_000_003 + state["step"], log, (ckpt or {}).get("pool"))
    n_params = sum(p.numel() for p in unet.parameters())
    log({"event": "start", "params": n_params, "batch": batch, "lr": lr, "step": state["step"], "device": str(device), "fresh_optimizer": state["opt_steps"] == 0})
    if opts.compile:
        unet.compile()  # in place: the state dict keeps its keys

    def checkpoint() -> None:
        rng = {
            "batch": batch_gen.get_state(),
            "torch": torch.get_rng_state(),
            "noise": noise_gen.get_state(),
            "noise_device": str(device),
            "views": producer.state_dict(),
        }
        pool_state = _pool_checkpoint(producer, pool)
        _save(
            ckpt_path,
            {
                "profile": prof.name,
                "unet_config": cfg,
                "unet": unet.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "state": state,
                "rng": rng,
                "pool": pool_state,
            },
        )

    unet.train()
    session = _Session(state, producer, pool, opts, log, checkpoint)
    loss = None
    while not clock.done(session.steps):
        session.fill_pool()
        vb = pool.sample(batch, batch_gen)
        x0 = vb.float_images()
        emb = emb_table[_caption_ids(table, vb.pair_ids, vb.dir_ids, opts, batch_gen)]
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(state["opt_steps"], prof.unet_warmup, 0.0, 0.0)
        with _autocast(device):
            loss = diffusion_loss(unet, x0, emb, alphas_cumprod, noise_gen, opts.snr_gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet)
        session.after_step(loss, x0.shape[0], lambda: {"lr": opt.param_groups[0]["lr"]})
    last_loss = session.close(loss)
    summary = {
        "event": "end",
        "steps": state["step"],
        "train_seconds": round(state["seconds"], 1),
        "samples_seen": state["samples"],
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "ema_updates": ema.updates,
        "final_loss": last_loss,
        "views_rendered": state["views_rendered"],
        "reuse": pool.reuse,
        "params": n_params,
    }
    log(summary)
    return summary


# ------------------------------------------------------------------------------------------------ export/import
def _phase_summary(run: Path, phase: str) -> Dict[str, Any]:
    """The last 'end' (or 'imported') record of a phase's log, without the bookkeeping keys."""
    path = run / phase / "log.jsonl"
    out: Dict[str, Any] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("event") in ("end", "imported"):
                out = rec
    return {k: v for k, v in out.items() if k not in ("phase", "time", "event", "held_out_pairs")}


def export_prior(run: Path, to: Path, overwrite: bool = False, opts: Optional[TrainOptions] = None) -> Path:
    """Write the shipped folder from a run: ``unet/`` (EMA weights, fp16 safetensors), ``scheduler/``,
    ``text_encoder_openclip/``, ``evaluator_clip/``, ``prior_card.json`` and ``README.md`` (the model card)."""
    from diffusers import UNet2DConditionModel

    from .card import build_card, render_card

    run, to = Path(run), Path(to)
    for need in (run / "clip" / "model", run / "evaluator" / "model", run / "unet" / "checkpoint.pt"):
        if not need.exists():
            raise SplatgenError(f"cannot export {run}: {need} is missing (train every phase first)")
    if to.exists():
        if not overwrite:
            raise SplatgenError(f"{to} exists; pass --overwrite to replace it")
    tmp = to.with_name(to.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    ck = _load(run / "unet" / "checkpoint.pt")
    unet = UNet2DConditionModel.from_config(ck["unet_config"])
    unet.load_state_dict(ck["ema"]["model"])
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # "modules that should be kept in float32: []" is noise here
    try:
        unet.to(torch.float16).save_pretrained(tmp / "unet", safe_serialization=True)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    make_scheduler().save_pretrained(tmp / "scheduler")
    shutil.copytree(run / "clip" / "model", tmp / TEXT_ENCODER_FOLDER)
    shutil.copytree(run / "evaluator" / "model", tmp / EVALUATOR_FOLDER)
    phases = {p: _phase_summary(run, p) for p in PHASES}
    phases["unet"].setdefault("ema_updates", ck["ema"]["updates"])
    card = build_card(tmp, phases, profile=ck["profile"], environment=_environment(), options=dataclasses.asdict(opts) if opts else None)
    (tmp / "prior_card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    (tmp / "README.md").write_text(render_card(card))
    if to.exists():
        shutil.rmtree(to)
    os.replace(tmp, to)
    return to


#: the last commit whose splatgen/assets/prior is the single-view prior (the multi-view fine-tune's base)
SINGLE_VIEW_BASE_COMMIT = "8d7c7c7"


def import_prior(prior: Path, run: Path) -> None:
    """Turn a shipped prior back into a run folder: both CLIPs done, the UNet ready to continue from its EMA
    weights (fresh AdamW), with the step counts and times of the card carried on."""
    from diffusers import UNet2DConditionModel


    prior, run = Path(prior), Path(run)
    card = check_prior_folder(prior)
    if (prior / SPEC_FILE).exists():
        raise SplatgenError(
            f"{prior} is a multi-view prior (it has {SPEC_FILE}); import takes a single-view one, the base that the "
            f"multi-view fine-tune starts from: `bash benchmarks/prior/single_view_base.sh DIR` writes the one shipped "
            f"until the multi-view prior replaced it (git {SINGLE_VIEW_BASE_COMMIT}), `train all` trains a new one")
    profile = card.get("profile", "full")
    phases = card.get("phases", {})
    for role, folder in (("clip", TEXT_ENCODER_FOLDER), ("evaluator", EVALUATOR_FOLDER)):
        pdir = run / role
        if (pdir / "checkpoint.pt").exists():
            raise SplatgenError(f"{pdir / 'checkpoint.pt'} exists; import into a fresh --out")
        pdir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(prior / folder, pdir / "model")
        model, _, _ = load_clip_folder(pdir / "model")
        cfg = json.loads((pdir / "model" / "open_clip_config.json").read_text())["model_cfg"]
        shutil.copy(pdir / "model" / BPE_NAME, pdir / BPE_NAME)
        st = phases.get(role, {})
        state = {"step": st.get("steps", 0), "opt_steps": 0, "seconds": st.get("train_seconds", 0.0), "samples": st.get("samples_seen", 0), "views_rendered": st.get("views_rendered", 0), "sessions": 0}
        _save(pdir / "checkpoint.pt", {"profile": profile, "model_cfg": cfg, "model": model.state_dict(), "optimizer": None, "state": state, "rng": {}})
        Logger(pdir / "log.jsonl", role)({**st, "event": "imported", "from": str(prior)}, echo=False)
    unet = UNet2DConditionModel.from_pretrained(prior / "unet", torch_dtype=torch.float32)
    st = phases.get("unet", {})
    sd = unet.state_dict()
    state = {"step": st.get("steps", 0), "opt_steps": 0, "seconds": st.get("train_seconds", 0.0), "samples": st.get("samples_seen", 0), "views_rendered": st.get("views_rendered", 0), "sessions": 0}
    pdir = run / "unet"
    pdir.mkdir(parents=True, exist_ok=True)
    ema = {"model": sd, "updates": int(st.get("ema_updates", st.get("steps", 0))), "max_decay": 0.999}
    _save(pdir / "checkpoint.pt", {"profile": profile, "unet_config": dict(unet.config), "unet": sd, "ema": ema, "optimizer": None, "state": state, "rng": {}})
    Logger(pdir / "log.jsonl", "unet")({**st, "event": "imported", "from": str(prior)}, echo=False)


# ------------------------------------------------------------------------------------------------ all
def train_all(opts: TrainOptions, to: Optional[Path], clip_minutes: float, evaluator_minutes: float, reserve_minutes: float) -> None:
    """The phases that are not done yet (a phase is done when its checkpoint exists: resume it with
    ``--resume``), then the UNet until ``--minutes`` minus ``reserve_minutes`` from the start, then export."""
    t0 = time.time()
    deadline = t0 + 60.0 * opts.minutes
    if opts.deadline > 0:
        deadline = min(deadline, opts.deadline)
    out = Path(opts.out)
    for role, minutes in (("clip", clip_minutes), ("evaluator", evaluator_minutes)):
        if (out / role / "checkpoint.pt").exists():
            print(f"[all] {role}: already trained ({out / role}), skipped", flush=True)
            continue
        train_clip(dataclasses.replace(opts, minutes=minutes, resume=False, deadline=deadline), role)
    left = (deadline - time.time()) / 60.0 - reserve_minutes
    if left <= 0.05 and opts.steps == 0:
        print(f"[all] no time left for the UNet ({left:.2f} min)", flush=True)
    else:
        resume = (out / "unet" / "checkpoint.pt").exists()
        train_unet(dataclasses.replace(opts, minutes=max(left, 0.0), resume=resume, deadline=deadline))
    if to is not None:
        export_prior(out, to, overwrite=True, opts=opts)
        print(f"[all] exported {to} ({time.time() - t0:.0f} s since start)", flush=True)


# ------------------------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m prior_training.train", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", type=Path, required=True, help="run folder")
        sp.add_argument("--minutes", type=float, default=1.0, help="wall-clock budget of this call")
        sp.add_argument("--steps", type=int, default=0, help="stop after this many steps instead (0: time only)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--batch", type=int, default=0, help="batch size (0: the profile's)")
        sp.add_argument("--lr", type=float, default=0.0, help="peak learning rate (0: the profile's)")
        sp.add_argument("--workers", type=int, default=-1, help="rendering processes (-1: CPUs - 3 on CUDA, 0 on CPU)")
        sp.add_argument("--resume", action="store_true", help="continue from RUN/<phase>/checkpoint.pt")
        sp.add_argument("--tiny", action="store_true", help="test-size models at 32x32 (CPU, seconds)")
        sp.add_argument("--device", default="auto")
        sp.add_argument("--compile", action="store_true", help="torch.compile the UNet (compile time counts)")
        sp.add_argument("--log-every", type=int, default=50)
        sp.add_argument("--checkpoint-minutes", type=float, default=3.0)
        sp.add_argument("--deadline", type=float, default=0.0, help="epoch seconds no phase runs past (0: none)")

    for name in ("clip", "evaluator", "unet"):
        common(sub.add_parser(name, help=f"train the {name}"))
    mv = sub.add_parser("mvunet", help="fine-tune RUN/unet into the camera-aware multi-view prior (prior_training.multiview)")
    common(mv)
    mv.add_argument("--views", type=int, default=4, help="views denoised together")
    mv.add_argument("--gated", action="store_true",
                    help="zero-initialised gates on the cross-view attention (start exactly at the single-view prior)")
    mv.add_argument("--view-words", action="store_true",
                    help="keep the view words in the captions beside the camera (the trainer then prompts with them)")
    mv.add_argument("--gate-lr-scale", type=float, default=100.0, help="the gates' learning rate / the UNet's")
    xm = sub.add_parser("export-mv", help="write the multi-view prior folder (RUN/mvunet + a base prior's CLIPs)")
    xm.add_argument("--out", type=Path, required=True, help="run folder")
    xm.add_argument("--from", dest="source", type=Path, required=True, help="the base prior folder")
    xm.add_argument("--to", type=Path, required=True)
    xm.add_argument("--overwrite", action="store_true")
    a = sub.add_parser("all", help="clip, evaluator and unet in one process, then export")
    common(a)
    a.add_argument("--to", type=Path, default=None, help="export the prior here at the end")
    a.add_argument("--clip-minutes", type=float, default=1.5)
    a.add_argument("--evaluator-minutes", type=float, default=1.0)
    a.add_argument("--reserve-minutes", type=float, default=0.5, help="left at the end for export and evaluation")
    e = sub.add_parser("export", help="write the shipped prior folder")
    e.add_argument("--out", type=Path, required=True, help="run folder")
    e.add_argument("--to", type=Path, required=True)
    e.add_argument("--overwrite", action="store_true")
    i = sub.add_parser("import", help="a run folder from a shipped prior (to continue training it)")
    i.add_argument("--out", type=Path, required=True, help="run folder (fresh)")
    i.add_argument("--from", dest="source", type=Path, required=True)
    return p


def _options(ns: argparse.Namespace) -> TrainOptions:
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    return TrainOptions(**{k: v for k, v in vars(ns).items() if k in fields})


def main(argv: Optional[Sequence[str]] = None) -> int:
    ns = _parser().parse_args(argv)
    try:
        if ns.command in ("clip", "evaluator"):
            train_clip(_options(ns), ns.command)
        elif ns.command == "unet":
            train_unet(_options(ns))
        elif ns.command == "mvunet":
            from .multiview import train_mvunet

            train_mvunet(_options(ns), ns.views, gated=ns.gated, view_words=ns.view_words,
                         gate_lr_scale=ns.gate_lr_scale)
        elif ns.command == "export-mv":
            from .multiview import export_multiview

            print(export_multiview(ns.out, ns.source, ns.to, ns.overwrite))
        elif ns.command == "all":
            train_all(_options(ns), ns.to, ns.clip_minutes, ns.evaluator_minutes, ns.reserve_minutes)
        elif ns.command == "export":
            print(export_prior(ns.out, ns.to, ns.overwrite))
        elif ns.command == "import":
            import_prior(ns.source, ns.out)
            print(f"imported {ns.source} into {ns.out}")
    except SplatgenError as exc:
        print(f"prior_training.train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
