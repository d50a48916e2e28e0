"""The camera-aware multi-view prior: the bundled prior's UNet taught to see each view's camera and to denoise the
views of one object together (MVDream's recipe, Shi et al. 2023, on splatgen's procedural world).

    bash benchmarks/prior/single_view_base.sh BASE                                     # the single-view prior
    python -m prior_training.train import  --out RUN --from BASE                       # ... as the start
    python -m prior_training.train mvunet  --out RUN --minutes 3.5 --gated --view-words [--views 4]   # fine-tune it
    python -m prior_training.train export-mv --out RUN --from BASE --to PRIOR_MV

(the package's prior is the multi-view one this makes; the single-view base is in git, 8d7c7c7).

What changes against the single-view prior (:mod:`prior_training.unet`):

- the camera: ``class_embed_type='projection'`` on 16 inputs, the view's camera-to-world matrix
  (:func:`splatgen.guidance.multiview.camera_vectors`); its MLP's last layer starts at zero, so training starts
  from the single-view prior's exact function;
- the views: every transformer block's self-attention runs over the tokens of the object's V views at once
  (:class:`splatgen.guidance.multiview.CrossViewAttnProcessor`); no new weights. With ``--gated`` the joint
  attention sits behind a zero-initialised gate per layer (``(1 - w) * per-view + w * joint``, ``w = tanh(gate)``,
  learnt at ``--gate-lr-scale`` times the UNet's rate), so training starts at the single-view prior's exact
  function; the CPU pilot of the ungated recipe showed the joint attention pulling a small prior's views together
  before its camera input had learnt anything;
- the data: groups of V views of one object sharing elevation, distance and field of view, azimuths 360/V apart
  from a random start (:class:`prior_training.data.WorldViews` with ``group_size``), one caption and one timestep
  per group; captions without view words (the camera says the view; ``--view-words`` keeps each view's own word
  beside the camera, and the exported prior is then prompted with them), colour dropped and the empty caption
  for classifier-free guidance per group as for the single-view prior.

The run folder gets ``RUN/mvunet/`` (checkpoint, log); ``export-mv`` writes a complete prior folder: the base
prior's text encoder and evaluator, the multi-view UNet (EMA, fp16) and ``multiview.json`` (with the gated recipe,
the layers' mixes in ``cross_view_mix`` and ``view_prompts`` from ``--view-words``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from splatgen.errors import SplatgenError
from splatgen.guidance.multiview import (
    GATE_SUFFIX, MultiViewSpec, add_camera_input, camera_vectors, install_cross_view_attention, split_gates,
)

from .data import PLAIN, WorldViews
from .unet import EMA, diffusion_loss


def _group_caption_ids(table, pair_ids: torch.Tensor, V: int, opts, gen: torch.Generator,
                       dir_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The captions of groups of V rows: one draw per group (the group's first row decides the object) of the
    training variants (without colour with ``p_no_colour``, the empty caption with ``p_uncond``); without
    ``dir_ids`` the plain caption for every view, with them each view's own view word (all plain with
    ``p_plain``, as the single-view prior was trained)."""
    first = pair_ids.view(-1, V)[:, 0]
    G = first.shape[0]
    u = torch.rand(3, G, generator=gen).to(first.device)
    objects = first.repeat_interleave(V)
    if dir_ids is None:
        dirs = torch.full_like(objects, PLAIN)
    else:
        dirs = torch.where((u[2] < opts.p_plain).repeat_interleave(V), torch.full_like(objects, PLAIN), dir_ids.to(objects.device))
    ids = table.caption_ids(objects, dirs, no_colour=(u[0] < opts.p_no_colour).repeat_interleave(V))
    return torch.where((u[1] < opts.p_uncond).repeat_interleave(V), torch.full_like(ids, table.uncond_id), ids)


def train_mvunet(opts, views: int = 4, gated: bool = False, view_words: bool = False,
                 gate_lr_scale: float = 100.0) -> Dict[str, Any]:
    """Fine-tune ``RUN/unet``'s EMA weights into a multi-view prior of ``views`` views (``RUN/mvunet``).

    ``gated``: the cross-view attention behind zero-initialised gates (:class:`GatedCrossViewAttnProcessor`),
    learnt at ``gate_lr_scale`` times the UNet's learning rate, so training starts at the single-view prior's
    exact function. ``view_words``: captions keep each view's view word beside the camera."""
    from diffusers import UNet2DConditionModel

    from . import train as T

    prof = opts.profile
    out = Path(opts.out)
    device, _, ckpt_path, log, clock = T.start_phase(opts, "mvunet")
    base_path = out / "unet" / "checkpoint.pt"
    if not base_path.exists() and not ckpt_path.exists():
        raise SplatgenError(f"{base_path} does not exist: train or import the single-view prior first "
                            f"(python -m prior_training.train import --out {out} --from BASE, BASE a single-view prior: "
                            "`bash benchmarks/prior/single_view_base.sh BASE` writes the one it was shipped with)")
    clip_dir = out / "clip" / "model"
    if not clip_dir.is_dir():
        raise SplatgenError(f"{clip_dir} does not exist: train or import the text encoder first")
    V = int(views)
    if prof.views_per_object % V or prof.pool_capacity % V:
        raise SplatgenError(f"--views {V} must divide the profile's views per object ({prof.views_per_object})")
    seed = opts.seed * 10 + 3
    torch.manual_seed(seed)
    table = T.CaptionTable()
    emb_table = T.caption_embeddings(clip_dir, device, table)

    ckpt = T._load(ckpt_path) if ckpt_path.exists() else None
    if ckpt is None:
        base = T._load(base_path)
        single = UNet2DConditionModel.from_config(base["unet_config"])
        single.load_state_dict(base["ema"]["model"])
        unet = add_camera_input(single, 16, seed=seed)
        cfg = dict(unet.config)
    else:
        cfg = ckpt["unet_config"]
        unet = UNet2DConditionModel.from_config(cfg)
        if bool(ckpt.get("gated")) != bool(gated) or bool(ckpt.get("view_words")) != bool(view_words):
            raise SplatgenError(f"{ckpt_path} was trained with gated={bool(ckpt.get('gated'))}, view_words="
                                f"{bool(ckpt.get('view_words'))}; resume it with the same options")
    unet = unet.to(device)
    install_cross_view_attention(unet, V, gated=gated)
    ema = EMA(unet, opts.ema_decay)
    lr = opts.lr or prof.unet_lr * 0.5
    groups = max(1, (opts.batch or prof.unet_batch) // V)
    gates = [p for n, p in unet.named_parameters() if n.endswith(GATE_SUFFIX)]
    weights = [p for n, p in unet.named_parameters() if not n.endswith(GATE_SUFFIX)]
    param_groups = [{"params": weights, "base_lr": lr}]
    if gates:
        param_groups.append({"params": gates, "base_lr": lr * gate_lr_scale})
    opt = torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.999), weight_decay=0.0, fused=device.type == "cuda")
    alphas_cumprod = T.make_scheduler().alphas_cumprod.to(device)
    batch_gen = torch.Generator().manual_seed(seed + 101)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 202)
    state = {"step": 0, "opt_steps": 0, "seconds": 0.0, "samples": 0, "views_rendered": 0, "sessions": 0}
    wv = WorldViews(device="cpu", resolution=prof.resolution, seed=seed, stream="prior",
                    objects_per_chunk=prof.objects_per_chunk, views_per_object=prof.views_per_object,
                    supersample=prof.supersample, group_size=V, overhead_fraction=0.0)
    if ckpt is not None:
        unet.load_state_dict(ckpt["unet"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])
        rng = ckpt["rng"]
        batch_gen.set_state(rng["batch"])
        torch.set_rng_state(rng["torch"])
        if rng.get("noise_device") == str(device):
            noise_gen.set_state(rng["noise"])
        if rng.get("views") and T._workers(opts, device) == 0:
            wv.load_state_dict(rng["views"])
    state["sessions"] += 1
    producer, pool = T._start_data(opts, wv, device, seed * 1_000_003 + state["step"], log, (ckpt or {}).get("pool"))
    n_params = sum(p.numel() for p in unet.parameters())
    log({"event": "start", "params": n_params, "views": V, "groups": groups, "lr": lr, "step": state["step"],
         "device": str(device), "gated": bool(gated), "gates": len(gates), "view_words": bool(view_words)})

    def checkpoint() -> None:
        rng = {"batch": batch_gen.get_state(), "torch": torch.get_rng_state(), "noise": noise_gen.get_state(),
               "noise_device": str(device), "views": producer.state_dict()}
        T._save(ckpt_path, {"profile": prof.name, "views": V, "gated": bool(gated), "view_words": bool(view_words),
                            "unet_config": cfg, "unet": unet.state_dict(),
                            "ema": ema.state_dict(), "optimizer": opt.state_dict(), "state": state, "rng": rng,
                            "pool": T._pool_checkpoint(producer, pool)})

    unet.train()
    session = T._Session(state, producer, pool, opts, log, checkpoint)
    loss = None
    while not clock.done(session.steps):
        session.fill_pool()
        vb = pool.sample_groups(groups, V, batch_gen)
        x0 = vb.float_images()
        emb = emb_table[_group_caption_ids(table, vb.pair_ids, V, opts, batch_gen, vb.dir_ids if view_words else None)]
        cams = camera_vectors(vb.cams[:, 0].cpu(), vb.cams[:, 1].cpu(), vb.cams[:, 2].cpu()).to(device)
        factor = T.lr_factor(state["opt_steps"], prof.unet_warmup, 0.0, 0.0)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        with T._autocast(device):
            loss = diffusion_loss(unet, x0, emb, alphas_cumprod, noise_gen, opts.snr_gamma, class_labels=cams, group_size=V)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet)
        session.after_step(loss, x0.shape[0], lambda: {"lr": opt.param_groups[0]["lr"], **_gate_stats(gates)})
    last_loss = session.close(loss)
    summary = {"event": "end", "steps": state["step"], "train_seconds": round(state["seconds"], 1),
               "samples_seen": state["samples"], "groups": groups, "views": V, "lr": lr, "seed": seed,
               "gated": bool(gated), "view_words": bool(view_words), **_gate_stats(gates),
               "ema_updates": ema.updates, "final_loss": last_loss, "views_rendered": state["views_rendered"],
               "reuse": pool.reuse, "params": n_params}
    log(summary)
    return summary


def _gate_stats(gates) -> Dict[str, float]:
    """The gated layers' mixes (``tanh(gate)``) for the log: their mean, smallest and largest."""
    if not gates:
        return {}
    m = torch.tanh(torch.stack([g.detach().float() for g in gates]))
    return {"mix_mean": round(float(m.mean()), 4), "mix_min": round(float(m.min()), 4), "mix_max": round(float(m.max()), 4)}


def export_multiview(run: Path, base: Path, to: Path, overwrite: bool = False) -> Path:
    """A multi-view prior folder: ``base``'s text encoder, evaluator and scheduler, ``RUN/mvunet``'s EMA UNet
    (fp16 safetensors), ``multiview.json`` and the card with a ``multiview`` section."""
    from diffusers import UNet2DConditionModel

    from . import train as T

    run, base, to = Path(run), Path(base), Path(to)
    ck_path = run / "mvunet" / "checkpoint.pt"
    if not ck_path.exists():
        raise SplatgenError(f"cannot export {run}: {ck_path} is missing (train the mvunet phase first)")
    if to.exists() and not overwrite:
        raise SplatgenError(f"{to} exists; pass --overwrite to replace it")
    ck = T._load(ck_path)
    tmp = to.with_name(to.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("unet"))
    unet = UNet2DConditionModel.from_config(ck["unet_config"])
    weights, mix = split_gates(ck["ema"]["model"])
    unet.load_state_dict(weights)
    unet.to(torch.float16).save_pretrained(tmp / "unet", safe_serialization=True)
    spec = MultiViewSpec(num_views=int(ck["views"]), normalise_distance=False, view_prompts=bool(ck.get("view_words")),
                         cross_view_mix=mix or None)
    spec.write(tmp)
    card_path = tmp / "prior_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    summary = T._phase_summary(run, "mvunet")
    card["name"] = "splatgen world prior (multi-view, camera-aware)"
    attention = ("self-attention across the views behind a zero-initialised tanh gate per layer"
                 if spec.cross_view_mix else "self-attention across the views")
    words = "captions with each view's view word" if spec.view_prompts else "captions without view words"
    card["multiview"] = {"spec": spec.to_json(), "base": str(base), "training": summary,
                         "recipe": "fine-tuned from the single-view prior: camera MLP (zero-initialised last layer) on "
                                   f"the timestep embedding, {attention}, groups of views sharing elevation/distance/fov "
                                   f"with azimuths 360/V apart, {words}"}
    card_path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    if to.exists():
        shutil.rmtree(to)
    os.replace(tmp, to)
    return to


__all__ = ["export_multiview", "train_mvunet"]
