"""The bundled prior's code on test-size models (CPU, no downloads, no network): data, CLIP, encoder, UNet
training with exact resumes, export, loading through PixelGuidance, R-precision."""

from __future__ import annotations

import json
import shutil
import socket
import warnings
from pathlib import Path

import pytest
import torch

from splatgen.cameras import DIRECTIONS
from splatgen.errors import ModelLoadError, SplatgenError
from splatgen.components import build_guidance
from splatgen.config import load_config
from splatgen.guidance import PixelGuidance
from splatgen.guidance.text_encoders import PROMPT_ENCODER_LOADERS, TEXT_ENCODER_FOLDER, OpenCLIPPromptEncoder
from splatgen.prior import check_prior_folder, prompt_check
from splatgen.world.captions import CaptionTable

from prior_training.clip import (
    TINY_CLIP_CONFIG,
    WORLD_WORDS,
    build_clip,
    load_clip_folder,
    model_config,
    save_clip_folder,
    text_token_features,
    world_tokenizer,
    write_world_bpe,
)
from prior_training.data import HELD_OUT_PAIRS, PLAIN, ViewPool, ViewProducer, WorldViews, held_out_pair_ids
from prior_training.evaluate import Evaluator, r_precision, render_ground_truth, run_r_precision, sample_prior, summarise
from prior_training.train import TrainOptions, _caption_ids, export_prior, import_prior, lr_factor, main, train_clip, train_unet
from splatgen.world import COLOURS, KINDS


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny ops on a shared machine: OpenMP threads spinning against other processes cost 100x.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every phase of a tiny prior for a few steps, then the exported folder."""
    run = tmp_path_factory.mktemp("prior_run")
    opts = TrainOptions(out=run, tiny=True, steps=12, log_every=4, workers=0, device="cpu")
    train_clip(opts, "clip")
    train_clip(opts, "evaluator")
    train_unet(TrainOptions(out=run, tiny=True, steps=3, log_every=1, workers=0, device="cpu"))
    prior = export_prior(run, run / "prior")
    return {"run": run, "prior": prior}


# ---- data --------------------------------------------------------------------------------------------------------


def test_caption_table_ids_and_texts() -> None:
    t = CaptionTable()
    assert len(t) == len(KINDS) * (len(COLOURS) + 1) * (len(DIRECTIONS) + 1) + 1
    assert t.texts[t.uncond_id] == ""
    p = torch.tensor([t.pair_id("mug", "red"), t.pair_id("car", "orange")])
    d = torch.tensor([DIRECTIONS.index("back"), PLAIN])
    assert [t.texts[i] for i in t.caption_ids(p, d).tolist()] == ["a red mug, back view", "an orange car"]
    assert t.texts[int(t.caption_ids(p[:1], d[:1], no_colour=torch.tensor([True])))] == "a mug, back view"
    assert t.pair(t.pair_id("tree", "grey")) == ("tree", "grey")


def test_world_views_batch_shapes_captions_and_held_out() -> None:
    wv = WorldViews(resolution=24, objects_per_chunk=3, views_per_object=4, supersample=1, seed=1, overhead_fraction=0.5)
    images, captions = wv.next_batch()
    assert images.shape == (12, 3, 24, 24) and images.dtype == torch.float32
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    assert float(images[:, :, 0, 0].mean()) == pytest.approx(1.0)  # white background in the corners
    for c in captions:
        base, view = c.split(", ")
        assert view.split()[0] in DIRECTIONS and view.endswith(" view")
        words = base.split()
        assert words[0] in ("a", "an") and words[1] in COLOURS and words[2] in KINDS
    # held-out pairs are never drawn (and the evaluator's stream draws them)
    held = set(held_out_pair_ids(wv.table))
    drawn = {wv.draw_object()[0] for _ in range(3000)}
    assert not drawn & held and len(drawn) == wv.table.num_pairs - len(HELD_OUT_PAIRS)
    ev = WorldViews(stream="evaluator", include_held_out=True, seed=2)
    assert {ev.draw_object()[0] for _ in range(3000)} >= held


def test_streams_have_disjoint_variation_seeds() -> None:
    seeds = {}
    for stream in ("prior", "evaluator", "test"):
        wv = WorldViews(stream=stream, seed=0, canonical_fraction=0.0)
        seeds[stream] = {wv.draw_object()[1] % 3 for _ in range(50)}
    assert seeds == {"prior": {0}, "evaluator": {1}, "test": {2}}


def test_held_out_pairs_cover_every_kind_and_colour() -> None:
    assert {k for k, _ in HELD_OUT_PAIRS} == set(KINDS)
    assert {c for _, c in HELD_OUT_PAIRS} == set(COLOURS)
    assert ("mug", "red") not in HELD_OUT_PAIRS


def test_pool_distinct_batches_and_in_process_producer() -> None:
    wv = WorldViews(resolution=16, objects_per_chunk=4, views_per_object=8, supersample=1)
    producer = ViewProducer(wv, workers=0)
    pool = ViewPool(256, 16, "cpu")
    for chunk in producer.poll(max_chunks=4):
        pool.add(chunk)
    assert pool.size == 32 and producer.rendered == 32  # one chunk per poll without workers
    for chunk in producer.poll(max_chunks=1) + producer.poll(max_chunks=1):
        pool.add(chunk)
    b = pool.sample_distinct(1000, torch.Generator().manual_seed(0))
    keys = (b.pair_ids * len(DIRECTIONS) + b.dir_ids).tolist()
    assert len(keys) == len(set(keys)) > 1
    assert pool.sample(5, torch.Generator().manual_seed(0)).images.shape == (5, 3, 16, 16)


def test_caption_dropout_and_variants() -> None:
    t = CaptionTable()
    n = 4000
    opts = TrainOptions(out=Path("."), p_uncond=0.12, p_plain=0.1, p_no_colour=0.05)
    ids = _caption_ids(t, torch.full((n,), t.pair_id("mug", "red")), torch.zeros(n, dtype=torch.long), opts, torch.Generator().manual_seed(0))
    texts = [t.texts[i] for i in ids.tolist()]
    assert texts.count("") / n == pytest.approx(0.12, abs=0.02)
    assert set(texts) <= {"", "a red mug, front view", "a red mug", "a mug, front view", "a mug"}
    assert texts.count("a red mug") / n == pytest.approx(0.1 * 0.88 * 0.95, abs=0.02)


# ---- CLIP ----------------------------------------------------------------------------------------------------------


def test_world_tokenizer_matches_open_clip_on_the_world_words(tmp_path: Path) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    full = SimpleTokenizer(context_length=32)
    tok = world_tokenizer(write_world_bpe(tmp_path / "bpe.gz"), 32)
    assert tok.vocab_size < 700
    for w in WORLD_WORDS:
        # the same pieces as with open_clip's full vocabulary: one token per world word
        assert [tok.decoder[i] for i in tok.encode(w)] == [full.decoder[i] for i in full.encode(w)]
        assert len(tok.encode(w)) == 1
    assert tok.decode(tok.encode("a photo of a corgi")).strip() == "a photo of a corgi"  # letters as the fallback
    ids = tok(["an orange mushroom, overhead view"])[0]
    assert int(ids[0]) == tok.sot_token_id and int(ids.argmax()) == 7  # eot is the largest id (argmax pooling)
    # the merges file is byte-identical on every write
    assert (tmp_path / "bpe.gz").read_bytes() == write_world_bpe(tmp_path / "bpe2.gz").read_bytes()


def _tiny_clip(tmp_path: Path):
    tok = world_tokenizer(write_world_bpe(tmp_path / "bpe.gz"), TINY_CLIP_CONFIG["text_cfg"]["context_length"])
    cfg = model_config(TINY_CLIP_CONFIG, tok.vocab_size)
    torch.manual_seed(0)
    return build_clip(cfg), tok, cfg


def test_clip_training_step_reduces_the_loss_on_a_fixed_batch(tmp_path: Path) -> None:
    import open_clip

    model, tok, _ = _tiny_clip(tmp_path)
    wv = WorldViews(resolution=32, objects_per_chunk=8, views_per_object=1, supersample=1, seed=3)
    images, captions = wv.next_batch()
    text = tok(captions)
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        return loss_fn(model.encode_image(images, normalize=True), model.encode_text(text, normalize=True), model.logit_scale.exp())

    first = float(loss().detach())
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < 0.8 * first


def test_clip_folder_round_trip_is_exact_and_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tok, cfg = _tiny_clip(tmp_path)
    folder = save_clip_folder(model, tmp_path / "clip", cfg, tmp_path / "bpe.gz", {"role": "test"}, dtype=torch.float32)
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"] == cfg and config["splatgen"]["role"] == "test"

    def no_network(*args, **kwargs):
        raise AssertionError("network access while loading a local CLIP folder")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    loaded, tok2, meta = load_clip_folder(folder)
    text = tok2(["a red mug, back view", ""])
    assert torch.equal(text, tok(["a red mug, back view", ""]))
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    model.eval().requires_grad_(False)  # as loaded (the attention fast path depends on it)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), loaded.encode_image(images))
        assert torch.equal(model.encode_text(text), loaded.encode_text(text))


def test_clip_folder_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_clip_folder(tmp_path / "nothing")
    model, tok, cfg = _tiny_clip(tmp_path)
    folder = save_clip_folder(model, tmp_path / "clip", cfg, tmp_path / "bpe.gz")
    (folder / "open_clip_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="could not load the CLIP folder"):
        load_clip_folder(folder)
    (folder / "open_clip_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="lacks"):
        load_clip_folder(folder)


def test_prompt_encoder_shapes_determinism_and_warnings(tmp_path: Path) -> None:
    model, tok, cfg = _tiny_clip(tmp_path)
    enc = OpenCLIPPromptEncoder(model, tok, "cpu", text_aliases={"gray": "grey"}, prompt_check=prompt_check(HELD_OUT_PAIRS))
    L, D = cfg["text_cfg"]["context_length"], cfg["text_cfg"]["width"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # world prompts warn about nothing
        e = enc.encode(["a red mug", "a red mug, front view", ""])
    assert e.shape == (3, L, D) and e.dtype == torch.float32
    # the unconditional embedding is deterministic, and the same (to float rounding) in any batch
    assert torch.equal(enc.encode([""]), enc.encode([""]))
    assert torch.allclose(enc.encode([""]), e[2:3], atol=1e-5)
    with torch.no_grad():
        assert torch.equal(text_token_features(model, tok([""])), enc.encode([""]))
    assert torch.equal(enc.tokenize(["a gray mug"]), enc.tokenize(["a grey mug"]))  # colour aliases
    assert not torch.equal(e[0], e[1])
    assert enc.truncation("a red mug") is None
    cut = enc.truncation("a red mug " + "very " * 20)
    assert cut is not None and cut[0] > 0 and cut[1].startswith("a red mug")
    with pytest.warns(UserWarning, match="not one"):
        enc.encode(["a photo of a corgi"])
    with pytest.warns(UserWarning, match="held out"):
        enc.encode(["a blue mug, back view"])
    enc.release()
    with pytest.raises(RuntimeError, match="released"):
        enc.encode(["a red mug"])


# ---- UNet training, checkpoints, export, loading ----------------------------------------------------------------------


def test_lr_schedule() -> None:
    assert lr_factor(0, 10, 0.0, 0.2) == pytest.approx(0.1)
    assert lr_factor(50, 10, 0.5, 0.2) == 1.0
    assert lr_factor(50, 10, 0.9, 0.2) == pytest.approx(0.5)
    assert lr_factor(50, 10, 1.0, 0.0) == 1.0


def test_unet_resume_is_exact(tiny_run: dict, tmp_path: Path) -> None:
    runs = {}
    for name in ("straight", "resumed"):
        runs[name] = tmp_path / name
        shutil.copytree(tiny_run["run"] / "clip", runs[name] / "clip")
    kw = dict(tiny=True, log_every=1, workers=0, device="cpu")
    train_unet(TrainOptions(out=runs["straight"], steps=4, **kw))
    train_unet(TrainOptions(out=runs["resumed"], steps=2, **kw))
    with pytest.raises(SplatgenError, match="--resume"):
        train_unet(TrainOptions(out=runs["resumed"], steps=2, **kw))
    train_unet(TrainOptions(out=runs["resumed"], steps=2, resume=True, **kw))
    a, b = (torch.load(runs[n] / "unet" / "checkpoint.pt", weights_only=False) for n in ("straight", "resumed"))
    assert a["state"]["step"] == b["state"]["step"] == 4 and b["state"]["sessions"] == 2
    assert b["ema"]["updates"] == 4
    for key in ("batch", "noise"):
        assert torch.equal(a["rng"][key], b["rng"][key])
    for k in a["unet"]:
        assert torch.equal(a["unet"][k], b["unet"][k]), k
        assert torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]), k
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]


def test_export_layout_card_and_checks(tiny_run: dict, tmp_path: Path) -> None:
    prior = tiny_run["prior"]
    card = check_prior_folder(prior)
    assert card["held_out_pairs"] == [list(p) for p in HELD_OUT_PAIRS]
    assert card["phases"]["unet"]["steps"] == 3 and card["phases"]["clip"]["steps"] == 12
    assert card["sizes_bytes"]["total"] > 0 and "mug" in card["vocabulary"]["kinds"]
    assert (prior / "README.md").read_text().startswith("# splatgen world prior")
    unet_cfg = json.loads((prior / "unet" / "config.json").read_text())
    assert unet_cfg["in_channels"] == 3 and unet_cfg["cross_attention_dim"] == TINY_CLIP_CONFIG["text_cfg"]["width"]
    from safetensors import safe_open

    with safe_open(str(prior / "unet" / "diffusion_pytorch_model.safetensors"), framework="pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    # corrupt or missing files: one clear message naming the file
    bad = tmp_path / "bad"
    shutil.copytree(prior, bad)
    (bad / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="corrupt file unet/diffusion_pytorch_model.safetensors"):
        check_prior_folder(bad)
    shutil.rmtree(bad / "evaluator_clip")
    with pytest.raises(ModelLoadError, match="incomplete.*evaluator_clip"):
        check_prior_folder(bad)
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_prior_folder(tmp_path / "nothing")


def test_pixel_guidance_loads_the_exported_prior(tiny_run: dict) -> None:
    assert TEXT_ENCODER_FOLDER in PROMPT_ENCODER_LOADERS
    # built as a run builds it: a folder with prior_card.json is a prior of the world, checked and warned about
    g = build_guidance(load_config(overrides=[f"guidance.model={tiny_run['prior']}"]), "cpu")
    assert isinstance(g, PixelGuidance)
    assert g.input_size == 32 and g.num_train_timesteps == 1000 and g.prediction_type == "epsilon"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g.prepare_text("a red mug")
    x = torch.randn(2, 3, 32, 32)
    eps = g.predict_noise(x, torch.tensor([700, 300]), ["front", "back"])
    assert eps.shape == (4, 3, 32, 32) and torch.isfinite(eps).all()
    # the unconditional half is the UNet on the encoder's "" embedding, exactly as in training
    enc = OpenCLIPPromptEncoder.from_folder(tiny_run["prior"] / TEXT_ENCODER_FOLDER)
    with torch.no_grad():
        direct = g.unet(x, torch.tensor([700, 300]), encoder_hidden_states=enc.encode(["", ""])).sample
    assert torch.allclose(eps[:2], direct, atol=1e-5)
    with pytest.warns(UserWarning) as record:  # (the tiny encoder's 16 tokens also cut the view suffix)
        build_guidance(load_config(overrides=[f"guidance.model={tiny_run['prior']}"]), "cpu").prepare_text("a photo of a corgi")
    assert any("is not one" in str(w.message) and "kinds" in str(w.message) for w in record)
    # the same folder loaded directly is just a pixel-space model: its encoder knows nothing about the world
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        PixelGuidance(str(tiny_run["prior"]), "cpu").prepare_text("a red mug")


def test_cli_export_refuses_to_overwrite_and_import_continues(tiny_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "--out", str(tiny_run["run"]), "--to", str(tiny_run["prior"])]) == 2
    assert "--overwrite" in capsys.readouterr().err
    run2 = tmp_path / "run2"
    import_prior(tiny_run["prior"], run2)
    ck = torch.load(run2 / "unet" / "checkpoint.pt", weights_only=False)
    assert ck["optimizer"] is None and ck["state"]["step"] == 3
    train_unet(TrainOptions(out=run2, tiny=True, steps=2, resume=True, log_every=1, workers=0, device="cpu"))
    export_prior(run2, tmp_path / "prior2")
    card = json.loads((tmp_path / "prior2" / "prior_card.json").read_text())
    assert card["phases"]["unet"]["steps"] == 5 and card["phases"]["clip"]["steps"] == 12


# ---- evaluation -----------------------------------------------------------------------------------------------------


def test_r_precision_on_constructed_embeddings() -> None:
    text = torch.eye(4)
    images = torch.tensor([[1.0, 0.1, 0, 0], [0, 0.2, 1.0, 0], [0, 1.0, 0.9, 0], [0.0, 0.0, 1.0, 0.5]])
    true = torch.tensor([0, 2, 1, 3])
    assert r_precision(images, text, true).tolist() == [True, True, True, False]
    # restricting the candidates: image 3's true caption wins once caption 2 is not a candidate
    cand = torch.tensor([[0, 1], [2, 3], [1, 2], [0, 3]])
    assert r_precision(images, text, true, cand).tolist() == [True, True, True, True]
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[3, 2] = False
    assert r_precision(images, text, true, mask).tolist() == [True, True, True, True]


def test_evaluator_scores_and_summary(tiny_run: dict) -> None:
    ev = Evaluator(tiny_run["prior"] / "evaluator_clip")
    t = CaptionTable()
    pairs = [t.pair_id("mug", "red"), t.pair_id("mug", "blue"), t.pair_id("chair", "green")]
    dirs = [DIRECTIONS.index("front"), DIRECTIONS.index("back"), DIRECTIONS.index("side")]
    gt = render_ground_truth(pairs, dirs, resolution=32, supersample=1)
    assert gt.shape == (3, 3, 32, 32)
    scores = ev.score(gt, torch.tensor(pairs), torch.tensor(dirs))
    assert set(scores) >= {"correct", "kind_correct", "colour_correct", "direction_correct"}
    summary = summarise(scores, torch.tensor(pairs), torch.tensor(dirs))
    assert summary["held_out"]["n"] == 1 and summary["seen"]["n"] == 2
    assert 0.0 <= summary["all"]["r_precision"] <= 1.0
    # a run's renders ([0, 1], one direction each), as `splatgen evaluate` would score them
    rp = run_r_precision(ev, (gt[:1] + 1) / 2, "a red mug", ["front"])
    assert rp in (0.0, 1.0) and run_r_precision(ev, (gt[:1] + 1) / 2, "a photo of a corgi", ["front"]) is None


def test_sample_prior_runs(tiny_run: dict) -> None:
    x = sample_prior(tiny_run["prior"], ["a red mug, front view", "a blue car, side view"], steps=3, guidance_scale=3.0)
    assert x.shape == (2, 3, 32, 32) and float(x.abs().max()) <= 1.0


# ---- the multi-view prior -------------------------------------------------------------------------------------


def test_grouped_views_share_a_camera_ring_and_the_pool_keeps_groups() -> None:
    wv = WorldViews(resolution=16, seed=3, objects_per_chunk=2, views_per_object=8, supersample=1, group_size=4,
                    overhead_fraction=0.0)
    chunk = wv.render_chunk()
    cams = chunk.cams.view(4, 4, 3)  # 2 objects x 2 groups of 4 views
    assert (cams[:, :, 0] == cams[:, :1, 0]).all() and (cams[:, :, 2] == cams[:, :1, 2]).all()
    steps = torch.remainder(cams[:, :, 1].diff(dim=1), 360.0)
    torch.testing.assert_close(steps, torch.full((4, 3), 90.0), atol=1e-3, rtol=0)
    pool = ViewPool(32, 16, "cpu")
    pool.add(chunk)
    pool.add(wv.render_chunk())
    g = pool.sample_groups(5, 4, torch.Generator().manual_seed(0))
    assert len(g) == 20
    assert (g.pair_ids.view(5, 4) == g.pair_ids.view(5, 4)[:, :1]).all()  # one object per group
    assert (g.cams.view(5, 4, 3)[:, :, 0] == g.cams.view(5, 4, 3)[:, :1, 0]).all()
    with pytest.raises(ValueError, match="not a multiple of group_size"):
        WorldViews(views_per_object=6, group_size=4)


def test_multiview_prior_starts_as_the_single_view_one_trains_resumes_and_loads(tiny_run: dict, tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel

    from prior_training.multiview import export_multiview, train_mvunet
    from splatgen.guidance.multiview import add_camera_input, camera_vectors

    # The camera MLP's last layer starts at zero: the new model is the single-view prior's function exactly.
    base = torch.load(tiny_run["run"] / "unet" / "checkpoint.pt", weights_only=False)
    single = UNet2DConditionModel.from_config(base["unet_config"])
    single.load_state_dict(base["ema"]["model"])
    cam = add_camera_input(single)
    x, t, emb = torch.randn(4, 3, 32, 32), torch.full((4,), 300), torch.randn(4, 16, single.config.cross_attention_dim)
    cams = camera_vectors(torch.zeros(4), torch.tensor([0.0, 90.0, 180.0, 270.0]), torch.full((4,), 2.0))
    with torch.no_grad():
        torch.testing.assert_close(cam(x, t, encoder_hidden_states=emb, class_labels=cams).sample,
                                   single(x, t, encoder_hidden_states=emb).sample)
    runs = {}
    for name in ("straight", "resumed"):
        runs[name] = tmp_path / name
        for part in ("clip", "unet"):
            shutil.copytree(tiny_run["run"] / part, runs[name] / part)
    kw = dict(tiny=True, log_every=1, workers=0, device="cpu")
    train_mvunet(TrainOptions(out=runs["straight"], steps=4, **kw))
    train_mvunet(TrainOptions(out=runs["resumed"], steps=2, **kw))
    train_mvunet(TrainOptions(out=runs["resumed"], steps=2, resume=True, **kw))
    a, b = (torch.load(runs[n] / "mvunet" / "checkpoint.pt", weights_only=False) for n in ("straight", "resumed"))
    assert a["state"]["step"] == b["state"]["step"] == 4
    for k in a["unet"]:
        assert torch.equal(a["unet"][k], b["unet"][k]), k
    assert a["unet"]["class_embedding.linear_2.weight"].abs().sum() > 0  # the camera MLP learned something
    with pytest.raises(SplatgenError, match="import the single-view prior first"):
        train_mvunet(TrainOptions(out=tmp_path / "empty", steps=1, **kw))
    prior_mv = export_multiview(runs["straight"], tiny_run["prior"], tmp_path / "prior_mv")
    g = build_guidance(load_config(overrides=[f"guidance.model={prior_mv}"]), "cpu")
    assert g.joint_views == 4 and g.multiview.view_prompts is False
    card = json.loads((prior_mv / "prior_card.json").read_text())
    assert card["multiview"]["training"]["steps"] == 4
    assert "without view words" in card["multiview"]["recipe"] and "gate" not in card["multiview"]["recipe"]
    check_prior_folder(prior_mv)
    # The gated recipe with view words: gates in the checkpoint, mixes and view prompts in the exported spec, and a
    # checkpoint is resumed only with the options it was trained with.
    gated = tmp_path / "gated"
    for part in ("clip", "unet"):
        shutil.copytree(tiny_run["run"] / part, gated / part)
    summary = train_mvunet(TrainOptions(out=gated, steps=2, **kw), gated=True, view_words=True)
    assert summary["gated"] and summary["view_words"] and -1 < summary["mix_min"] <= summary["mix_max"] < 1
    ck = torch.load(gated / "mvunet" / "checkpoint.pt", weights_only=False)
    assert any(k.endswith(".processor.gate") for k in ck["unet"])
    with pytest.raises(SplatgenError, match="resume it with the same options"):
        train_mvunet(TrainOptions(out=gated, steps=1, resume=True, **kw))
    prior_g = export_multiview(gated, tiny_run["prior"], tmp_path / "prior_g")
    g2 = build_guidance(load_config(overrides=[f"guidance.model={prior_g}"]), "cpu")
    assert g2.multiview.view_prompts is True and len(g2.multiview.cross_view_mix) == sum(
        1 for k in ck["unet"] if k.endswith(".processor.gate"))
    recipe = json.loads((prior_g / "prior_card.json").read_text())["multiview"]["recipe"]
    assert "each view's view word" in recipe and "gate" in recipe  # the card says how it was trained
    check_prior_folder(prior_g)


def test_multiview_captions_are_one_object_per_group_with_each_views_own_view_word() -> None:
    from prior_training.data import DIRECTIONS
    from prior_training.multiview import _group_caption_ids
    from prior_training.train import CaptionTable

    table = CaptionTable()
    V, G = 4, 64
    pair_ids = torch.randint(0, 20, (G, 1)).expand(G, V).reshape(-1)
    dir_ids = torch.arange(V).repeat(G) % len(DIRECTIONS)
    opts = TrainOptions(out=Path("unused"), p_plain=0.25, p_no_colour=0.25, p_uncond=0.25)
    ids = _group_caption_ids(table, pair_ids, V, opts, torch.Generator().manual_seed(0), dir_ids).view(G, V)
    texts = [[table.texts[int(i)] for i in row] for row in ids]
    uncond = [all(t == "" for t in row) for row in texts]
    assert 0 < sum(uncond) < G and all(all(t == "" for t in row) or all(t for t in row) for row in texts)
    with_words = [row for row in texts if row[0] and "view" in row[0]]
    assert with_words and all(len(set(row)) == V for row in with_words)  # each view its own view word
    assert all(len({t.split(",")[0] for t in row}) == 1 for row in texts)  # one object (and colour) per group
    plain = _group_caption_ids(table, pair_ids, V, opts, torch.Generator().manual_seed(0)).view(G, V)
    assert all(len(set(row.tolist())) == 1 for row in plain) and not any("view" in table.texts[int(i)] for i in plain[:, 0])
