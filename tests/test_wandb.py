"""Weights & Biases logging (run.wandb), offline: the W&B run's own file holds the scalars of metrics.jsonl at
their steps, the config and the run folder's name; the run folder is the same as without it; wandb is imported
only when asked for, and a missing package or a W&B that cannot start is one line."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

import splatgen
from splatgen.errors import SplatgenError

TINY = ["run.steps=3", "run.log_every=1", "model.num_points=200", "render.resolution=24", "run.preview_views=0",
        "run.evaluate=false", "run.checkpoint_minutes=0"]


def wandb_records(path: Path) -> List[object]:
    """The records of an offline run's ``run-<id>.wandb`` file, parsed with wandb's own protobuf classes.

    The file is a LevelDB-style log (wandb's format since its first releases): a 7-byte header (``:W&B``, magic
    0xBEE1, version 0), then 32 KiB blocks of chunks, each ``crc32c (4) | length (2) | type (1)`` and its bytes;
    type 1 is a whole record, 2/3/4 the first, middle and last pieces of one; a block's last < 7 bytes are
    padding. wandb 0.31 no longer ships a Python reader of it (its Go core writes and reads it)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:7] == b":W&B" + struct.pack("<HB", 0xBEE1, 0), data[:7]
    block, pos, records, pieces = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:  # zero padding at the end of the last block
            break
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            records.append(record)
            pieces = b""
    return records


def offline_run(wandb_dir: Path) -> Dict[str, object]:
    """The one offline W&B run under ``wandb_dir``: its run record and its history rows (key -> value)."""
    runs = sorted((wandb_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    records = wandb_records(runs[0])
    run = [r.run for r in records if r.WhichOneof("record_type") == "run"][0]
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    return {"run": run, "history": history, "config": config}


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """W&B offline, its files in a folder of this test (and its settings away from the user's)."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wb-config"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    wandb.teardown()  # wandb reads its environment once per process: let it read this test's
    yield tmp_path / "wb"
    wandb.teardown()


def test_an_offline_run_logs_the_scalars_config_and_folder_and_leaves_the_run_as_it_was(tmp_path, offline):
    splatgen.generate("a red mug", config="world", out_dir=tmp_path / "plain", overrides=TINY)
    splatgen.generate("a red mug", config="world", out_dir=tmp_path / "red-mug", overrides=TINY + [
        "run.wandb=true", "run.wandb_project=splatgen-tests", "run.wandb_entity=a-lab"])
    logged = offline_run(offline)
    run = logged["run"]
    assert (run.project, run.entity, run.display_name) == ("splatgen-tests", "a-lab", "red-mug")
    assert logged["config"]["prompt"] == "a red mug" and logged["config"]["run"]["steps"] == 3
    assert logged["config"]["run_folder"] == str(tmp_path / "red-mug")
    # Every row of metrics.jsonl, at its step: the scalars TensorBoard gets (W&B adds its own _-keys).
    rows = [json.loads(line) for line in (tmp_path / "red-mug" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    history = [{k: v for k, v in h.items() if not k.startswith("_")} | {"step": h["_step"]} for h in logged["history"]]
    assert history == rows
    # The run folder is the run without W&B: the same files, the same Gaussians, the config but for run.wandb*.
    assert sorted(p.name for p in (tmp_path / "red-mug").rglob("*")) == sorted(p.name for p in (tmp_path / "plain").rglob("*"))
    assert (tmp_path / "red-mug" / "splats.ply").read_bytes() == (tmp_path / "plain" / "splats.ply").read_bytes()
    changed = set((tmp_path / "red-mug" / "config.yaml").read_text().splitlines()) ^ \
        set((tmp_path / "plain" / "config.yaml").read_text().splitlines())
    assert {line.split(":")[0].strip() for line in changed} == {"wandb", "wandb_project", "wandb_entity"}, changed
    plain_rows = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert [{**r, "elapsed_s": 0} for r in rows] == [{**r, "elapsed_s": 0} for r in plain_rows]


def test_the_name_is_configurable(tmp_path, offline):
    splatgen.generate("a red mug", config="world", out_dir=tmp_path / "run", overrides=TINY + [
        "run.steps=1", "run.wandb=true", "run.wandb_name=mug-lr-sweep-3"])
    logged = offline_run(offline)
    assert (logged["run"].display_name, logged["run"].project) == ("mug-lr-sweep-3", "splatgen")
    assert [h["_step"] for h in logged["history"]] == [1]


def test_wandb_is_imported_only_when_a_run_asks_for_it(tmp_path):
    code = ("import sys, splatgen; splatgen.generate('a red mug', config='world', out_dir=sys.argv[1], "
            f"overrides={TINY!r}); print('wandb' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_missing_wandb_is_one_line_naming_the_extra_and_leaves_no_run(tmp_path, monkeypatch, capsys):
    from splatgen.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as when not installed
    assert main(["generate", "a red mug", "--config", "world", "--out", str(tmp_path / "run"), *TINY,
                 "run.wandb=true"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "splatgen: error: run.wandb=true needs the wandb package: pip install 'splatgen[wandb]'"
    assert err[:-1] == [f"writing {tmp_path / 'run.partial'} (renamed {tmp_path / 'run'} when complete)"]
    assert list(tmp_path.iterdir()) == []


def test_a_wandb_that_cannot_start_is_one_line(tmp_path, monkeypatch, offline):
    # Online without an API key (and nowhere to reach): wandb refuses before any network call.
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(SplatgenError, match=r"^run.wandb: Weights & Biases could not start a run \(.*API key.*\); "
                                            r"log in with `wandb login`, or set WANDB_MODE=offline") as exc:
        splatgen.generate("a red mug", config="world", out_dir=tmp_path / "run", overrides=TINY + ["run.wandb=true"])
    assert "\n" not in str(exc.value)
    # Refused during the run's setup: no run folder is left behind.
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()
