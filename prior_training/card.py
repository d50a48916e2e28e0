"""The model card of a prior: ``prior_card.json`` (machine-readable) and ``README.md`` rendered from it."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from splatgen.cameras import DIRECTIONS
from splatgen.world.grammar import COLOUR_ALIASES, COLOURS, FRONT_BACK_KINDS, KINDS

from .data import ELEVATION_RANGE, FOVY_RANGE, HELD_OUT_PAIRS, OVERHEAD_RANGE, RADIUS_RANGE, STREAMS
from .unet import SCHEDULER_CONFIG


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def build_card(
    folder: Path,
    phases: Dict[str, Dict[str, Any]],
    profile: str = "full",
    environment: Optional[Dict[str, Any]] = None,
    options: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The card of the prior written in ``folder`` (sizes are measured there)."""
    sizes = {name: _size(folder / name) for name in ("unet", "scheduler", "text_encoder_openclip", "evaluator_clip") if (folder / name).exists()}
    sizes["total"] = sum(sizes.values())
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text()) if (folder / "unet" / "config.json").exists() else {}
    clip_cfg = json.loads((folder / "text_encoder_openclip" / "open_clip_config.json").read_text()) if (folder / "text_encoder_openclip").exists() else {}
    opts = {k: v for k, v in (options or {}).items() if k in ("seed", "p_uncond", "p_plain", "p_no_colour", "ema_decay", "snr_gamma", "cooldown", "workers")}
    return {
        "name": "splatgen world prior",
        "profile": profile,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "format": {
            "unet/": "diffusers UNet2DConditionModel, pixel space, RGB in [-1, 1], epsilon prediction, fp16 safetensors (EMA weights)",
            "scheduler/": "diffusers DDPMScheduler config (the training noise schedule)",
            "text_encoder_openclip/": "open_clip CLIP (local-dir format); its text tower's per-token features condition the UNet",
            "evaluator_clip/": "a second open_clip CLIP (other seed, other views), for CLIP R-precision",
        },
        "vocabulary": {
            "kinds": list(KINDS),
            "colours": list(COLOURS),
            "colour_aliases": dict(COLOUR_ALIASES),
            "directions": list(DIRECTIONS),
            "front_back_kinds": sorted(FRONT_BACK_KINDS),
            "captions": "[a|an] <colour> <kind>, <direction> view  (also without the direction, without the colour, and '')",
        },
        "held_out_pairs": [list(p) for p in HELD_OUT_PAIRS],
        "data": {
            "renderer": "splatgen.world.render_world (analytic ray casting), white background, 2x2 supersampling",
            "cameras": {
                "elevation_deg": list(ELEVATION_RANGE),
                "radius": list(RADIUS_RANGE),
                "fovy_deg": list(FOVY_RANGE),
                "azimuth": "stratified over the full circle, 16 views per object",
                "overhead_fraction": 0.05,
                "overhead_elevation_deg": list(OVERHEAD_RANGE),
            },
            "variation_seeds": f"seed mod 3 = stream ({STREAMS}); the prior also sees each caption's canonical object (parse_prompt's seed) for 20% of its objects",
            "held_out": "held-out pairs never reach the text encoder or the UNet; the evaluator is trained on all pairs",
        },
        "schedule": dict(SCHEDULER_CONFIG),
        "unet_config": {k: v for k, v in unet_cfg.items() if not k.startswith("_") and k in (
            "sample_size", "block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "cross_attention_dim", "attention_head_dim", "norm_num_groups")},
        "clip_config": clip_cfg.get("model_cfg", {}),
        "phases": phases,
        "training_options": opts,
        "sizes_bytes": sizes,
        "environment": environment or {},
        "metrics": {},
        "reproduce": "benchmarks/prior/train_on_gpu.sh (see docs/PRIOR.md)",
    }


def add_metrics(folder: Path, metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Merge evaluation numbers into ``folder``'s card and re-render its README."""
    path = Path(folder) / "prior_card.json"
    card = json.loads(path.read_text())
    card.setdefault("metrics", {}).update(metrics)
    path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    (Path(folder) / "README.md").write_text(render_card(card))
    return card


def _mib(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def _metrics_table(metrics: Dict[str, Any]) -> List[str]:
    """R-precision etc. per row (ground truth, then samples per guidance scale), seen / held-out."""

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    rows = []
    if "evaluator_on_ground_truth" in metrics:
        rows.append(("ground-truth renders (evaluator ceiling)", metrics["evaluator_on_ground_truth"]))
    for name, m in metrics.get("samples", {}).items():
        best = " (best)" if name == f"cfg{metrics.get('samples_best_cfg', 0):g}" else ""
        rows.append((f"prior samples, {name}{best}", m))
    out = [
        metrics.get("r_precision_protocol", ""),
        "",
        "| images | R-precision all | seen | held-out | kind acc. seen / held-out | colour acc. seen / held-out | front/back direction acc. |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in rows:
        a, s_, h = m.get("all", {}), m.get("seen", {}), m.get("held_out", {})
        out.append(
            f"| {name} | {f(a.get('r_precision'))} | {f(s_.get('r_precision'))} | {f(h.get('r_precision'))} | "
            f"{f(s_.get('kind_accuracy'))} / {f(h.get('kind_accuracy'))} | {f(s_.get('colour_accuracy'))} / {f(h.get('colour_accuracy'))} | "
            f"{f(m.get('front_back_direction_accuracy'))} |"
        )
    extra = {k: v for k, v in metrics.items() if k not in ("r_precision_protocol", "evaluator_on_ground_truth", "samples", "samples_best_cfg")}
    out += [""] + [f"- {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in extra.items()]
    return out


def _multiview_section(mv: Dict[str, Any]) -> List[str]:
    """The multi-view fine-tune: its recipe, its training and, where measured, its text-to-3D numbers."""
    spec, tr = mv.get("spec", {}), mv.get("training", {})
    mix = spec.get("cross_view_mix") or {}
    gates = (f"; cross-view attention in {len(mix)} layers, mixed in by learnt gates (tanh) from "
             f"{min(mix.values()):.2f} to {max(mix.values()):.2f}" if mix else "")
    lines = [
        "## Multi-view", "",
        f"{mv.get('recipe', '')[:1].upper()}{mv.get('recipe', '')[1:]}.", "",
        f"`multiview.json`: {spec.get('num_views', '?')} views, camera as {spec.get('camera', '?')}, view words "
        f"{'on' if spec.get('view_prompts') else 'off'}, elevations {spec.get('elevation_range', '?')} deg{gates}.", "",
        "| phase | steps | batch | time | params | final loss |", "| --- | --- | --- | --- | --- | --- |",
        f"| mvunet | {tr.get('steps', '?')} | {tr.get('groups', '?')} x {tr.get('views', '?')} views | "
        f"{tr.get('train_seconds', '?')} s | {tr.get('params', 0) / 1e6:.2f} M | "
        f"{'?' if tr.get('final_loss') is None else format(tr['final_loss'], '.4f')} |", "",
    ]
    t3 = mv.get("text_to_3d")
    if t3:
        lines += [t3.get("protocol", ""), "", "| | IoU | PSNR fg (dB) | Janus | R-precision |", "| --- | --- | --- | --- | --- |"]
        for name, r in t3.get("rows", {}).items():
            lines.append(f"| {name} | {r['iou']:.3f} | {r['psnr_fg']:.2f} | {r['janus']:.3f} | {r['r_precision']:.3f} |")
        lines += [""] + [f"- {k.replace('_', ' ')}: {v}" for k, v in t3.items() if k not in ("protocol", "rows")] + [""]
    return lines


def render_card(card: Dict[str, Any]) -> str:
    """The card as Markdown."""
    ph = card.get("phases", {})
    sizes = card.get("sizes_bytes", {})
    mv = card.get("multiview")
    views = (mv or {}).get("spec", {}).get("num_views")
    lines = [
        f"# {card.get('name', 'prior')}",
        "",
        "A small text-to-image diffusion model of splatgen's procedural world, trained from scratch by "
        "`prior_training.train`"
        + (f" and then fine-tuned into a camera-aware prior that denoises {views} views of one object together "
           "(see Multi-view)" if mv else "")
        + "; the default guidance of `splatgen generate`. It knows only the world's captions:",
        "",
        f"- kinds: {', '.join(card['vocabulary']['kinds'])}",
        f"- colours: {', '.join(card['vocabulary']['colours'])}",
        f"- views: `<caption>, <{'|'.join(card['vocabulary']['directions'])}> view`",
        f"- held out of training (generalisation test): {', '.join(c + ' ' + k for k, c in card['held_out_pairs'])}",
        "",
        "| part | what | size |",
        "| --- | --- | --- |",
    ]
    for key, what in card.get("format", {}).items():
        lines.append(f"| `{key}` | {what} | {_mib(sizes.get(key.rstrip('/')))} |")
    lines += [f"| total | | {_mib(sizes.get('total'))} |", "", "## Training", "", "| phase | steps | batch | time | params | final loss |", "| --- | --- | --- | --- | --- | --- |"]
    for name in ("clip", "evaluator", "unet"):
        p = ph.get(name, {})
        loss = p.get("final_loss")
        lines.append(
            f"| {name} | {p.get('steps', '?')} | {p.get('batch', '?')} | {p.get('train_seconds', '?')} s | "
            f"{p.get('params', 0) / 1e6:.2f} M | {'?' if loss is None else f'{loss:.4f}'} |"
        )
    env = card.get("environment", {})
    lines += ["", f"Environment: {', '.join(f'{k} {v}' for k, v in env.items())}.", ""]
    if mv:
        lines += _multiview_section(mv)
    lines += ["## Numbers of the single-view base" if mv else "## Numbers", ""]
    metrics = card.get("metrics", {})
    if not metrics:
        lines.append("Not measured yet: `python benchmarks/prior/evaluate_prior.py <this folder> --out DIR --update-card`.")
    else:
        lines += _metrics_table(metrics)
    lines += ["", "Reproduce: " + card.get("reproduce", ""), ""]
    return "\n".join(lines)
