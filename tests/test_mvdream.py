"""MVDream's checkpoints (splatgen.guidance.mvdream): a random-weight UNet written in the layout of MVDream's public
checkpoint (the original Stable Diffusion naming under ``model.diffusion_model.``, plus ``camera_embed``), converted
into a diffusers folder, must be the same network, load as a 4-view prior and generate. No real MVDream weights
reach this machine; the README gives the command a user runs with theirs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

import pytest
import torch

import splatgen
from splatgen.components import build_guidance
from splatgen.config import load_config
from splatgen.errors import ModelLoadError, SplatgenError
from splatgen.guidance.multiview import add_camera_input, camera_vectors, install_cross_view_attention
from splatgen.guidance.mvdream import MVDREAM_SPEC, UNET_PREFIX, convert, main, read_checkpoint
from splatgen.guidance.tiny import make_tiny_sd

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def ldm_layout(unet) -> Dict[str, torch.Tensor]:
    """``unet``'s weights named as MVDream's MultiViewUNetModel names them (openaimodel.py: input_blocks,
    middle_block, output_blocks, time_embed, camera_embed, out), written from that naming scheme independently of
    diffusers' converter, which the loader uses to read them back."""
    sd, out, cfg = unet.state_dict(), {}, unet.config
    n, layers = len(cfg.block_out_channels), cfg.layers_per_block
    down_attn = ["CrossAttn" in t for t in cfg.down_block_types]
    up_attn = ["CrossAttn" in t for t in cfg.up_block_types]

    def put(ldm: str, dif: str, resnet: bool = False) -> None:
        hits = [k for k in sd if k.startswith(dif + ".")]
        assert hits, dif
        for k in hits:
            rest = k[len(dif) + 1:]
            if resnet:
                head, _, tail = rest.partition(".")
                rest = f"{RESNET[head]}.{tail}"
            out[f"{UNET_PREFIX}{ldm}.{rest}"] = sd[k]

    put("time_embed.0", "time_embedding.linear_1")
    put("time_embed.2", "time_embedding.linear_2")
    put("camera_embed.0", "class_embedding.linear_1")
    put("camera_embed.2", "class_embedding.linear_2")
    put("input_blocks.0.0", "conv_in")
    i = 0
    for level in range(n):
        for j in range(layers):
            i += 1
            put(f"input_blocks.{i}.0", f"down_blocks.{level}.resnets.{j}", resnet=True)
            if down_attn[level]:
                put(f"input_blocks.{i}.1", f"down_blocks.{level}.attentions.{j}")
        if level < n - 1:
            i += 1
            put(f"input_blocks.{i}.0.op", f"down_blocks.{level}.downsamplers.0.conv")
    put("middle_block.0", "mid_block.resnets.0", resnet=True)
    put("middle_block.1", "mid_block.attentions.0")
    put("middle_block.2", "mid_block.resnets.1", resnet=True)
    o = -1
    for level in range(n):
        for j in range(layers + 1):
            o += 1
            put(f"output_blocks.{o}.0", f"up_blocks.{level}.resnets.{j}", resnet=True)
            if up_attn[level]:
                put(f"output_blocks.{o}.1", f"up_blocks.{level}.attentions.{j}")
            if j == layers and level < n - 1:
                put(f"output_blocks.{o}.{2 if up_attn[level] else 1}.conv", f"up_blocks.{level}.upsamplers.0.conv")
    put("out.0", "conv_norm_out")
    put("out.2", "conv_out")
    assert len(out) == len(sd)
    return out


@pytest.fixture(scope="module")
def mvdream(tmp_path_factory):
    from diffusers import UNet2DConditionModel

    root = tmp_path_factory.mktemp("mvdream")
    base = make_tiny_sd(root / "sd21-base")
    single = UNet2DConditionModel.from_pretrained(base / "unet")
    torch.manual_seed(7)
    unet = add_camera_input(single)
    torch.nn.init.normal_(unet.class_embedding.linear_2.weight, std=0.1)  # a trained camera MLP is not zero
    state = ldm_layout(unet)
    state["betas"] = torch.linspace(1e-4, 2e-2, 1000)  # the schedule's buffers sit beside the model in the file
    ckpt = root / "sd-v2.1-base-4view.pt"
    torch.save(state, ckpt)
    return {"base": base, "ckpt": ckpt, "unet": unet, "root": root}


def test_converted_unet_is_the_same_network(mvdream):
    from diffusers import UNet2DConditionModel

    folder = convert(mvdream["ckpt"], str(mvdream["base"]), mvdream["root"] / "converted")
    assert MVDREAM_SPEC == MVDREAM_SPEC.read(folder)
    loaded = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    ref = mvdream["unet"].eval()
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    for m in (loaded, ref):
        install_cross_view_attention(m, 4)
    x, t = torch.randn(8, 3, 8, 8), torch.full((8,), 600)
    emb = torch.randn(8, 5, 32)
    cams = camera_vectors(torch.full((8,), 15.0), torch.arange(8) * 90.0, torch.ones(8), normalise_distance=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, encoder_hidden_states=emb, class_labels=cams).sample,
                                   ref(x, t, encoder_hidden_states=emb, class_labels=cams).sample)


def test_converted_folder_is_a_four_view_prior_that_generates(mvdream):
    folder = mvdream["root"] / "converted-gen"
    assert main(["--checkpoint", str(mvdream["ckpt"]), "--base", str(mvdream["base"]), "--to", str(folder)]) == 0
    cfg = load_config(overrides=["guidance.type=stable-diffusion", f"guidance.model={folder}"])
    g = build_guidance(cfg, "cpu")
    assert g.joint_views == 4 and g.multiview.normalise_distance and not g.multiview.view_prompts
    r = splatgen.generate("a corgi", config="mvdream", overrides=[  # the bundled preset, at test size
        f"guidance.model={folder}", "guidance.dtype=fp32", "run.steps=3", "run.preview_views=0", "run.evaluate=false",
        "run.progress=off", "model.num_points=100", "render.resolution=16", "render.resolution_milestones=[]"])
    assert r.config.camera.batch_size == 4 and r.config.guidance.guidance_scale == 50.0
    assert r.history and torch.isfinite(torch.tensor(r.history[-1]["loss"]))


def test_conversion_errors_are_one_line(mvdream, tmp_path, capsys):
    plain = {k: v for k, v in torch.load(mvdream["ckpt"]).items() if "camera_embed" not in k}
    torch.save(plain, tmp_path / "sd.pt")
    with pytest.raises(ModelLoadError, match="not an MVDream checkpoint: no model.diffusion_model.camera_embed"):
        convert(tmp_path / "sd.pt", str(mvdream["base"]), tmp_path / "out")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="could not be read as a checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ModelLoadError, match="has no unet/"):
        convert(mvdream["ckpt"], str(tmp_path), tmp_path / "out")
    (tmp_path / "exists").mkdir()
    assert main(["--checkpoint", str(mvdream["ckpt"]), "--base", str(mvdream["base"]), "--to",
                 str(tmp_path / "exists")]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    with pytest.raises(SplatgenError):
        convert(mvdream["ckpt"], str(mvdream["base"]), tmp_path / "exists")


def test_mvdream_step_benchmark_runs_at_smoke_size(tmp_path):
    """benchmarks/perf/mvdream_step.py (the MVDream-shaped step; GPU numbers come from the device) at smoke size:
    a row with every stage timed, FLOPs counted and a fraction of the measured peak."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "perf"))
    import mvdream_step

    result = mvdream_step.main(["--small", "--models", "mvdream", "--out", str(tmp_path / "mv.json")])
    (row,) = result["rows"]
    assert "error" not in row, row
    assert row["model"] == "mvdream" and row["views"] == 4 and row["ms_per_step"] > 0
    assert set(row["stage_ms"]) == {"render", "encoder", "unet", "sds", "optimizer", "densify"}
    assert result["flops_tflop"]["mvdream"]["unet_fwd"] > 0 and row["fraction_of_peak"]["unet"] > 0
