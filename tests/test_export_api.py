"""Python and the command line write the same files: ``GenerationResult.export``/``save_ply`` and ``splatgen export``
go through one format table (``splatgen/export/formats.py``), which ``export --help`` and the README show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import splatgen
from splatgen.api import load_result
from splatgen.cli import main as cli_main
from splatgen.errors import SplatgenError
from splatgen.export.formats import FORMATS, OPTIONS
from test_batch import TINY

README = Path(__file__).resolve().parent.parent / "README.md"
#: options that keep the slow formats cheap on a CPU (the tiny run's faint splats need a fixed iso level)
SMALL = {"mesh": {"mesh_resolution": 32, "faces": 300, "texture_size": 64, "iso": 0.05},
         "video": {"frames": 4, "resolution": 32}}


@pytest.fixture(scope="module")
def mug(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    return splatgen.generate("a red mug", config="world", out_dir=out, overrides=TINY), out


def _flags(options):
    return [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def _files(folder: Path):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.name for f in FORMATS])
def test_the_api_writes_the_bytes_splatgen_export_writes(mug, tmp_path, capsys, fmt):
    result, run = mug
    options = SMALL.get(fmt.kind, {})
    for name in ("cli", "api", "loaded"):
        (tmp_path / name).mkdir()
    assert cli_main(["export", str(run), str(tmp_path / "cli" / f"mug{fmt.extension}"), *_flags(options)]) == 0
    api = tmp_path / "api" / f"mug{fmt.extension}"
    assert result.export(api, **options) == api
    load_result(run).export(tmp_path / "loaded" / f"mug{fmt.extension}", **options)
    cli = _files(tmp_path / "cli")
    assert cli and _files(tmp_path / "api") == cli and _files(tmp_path / "loaded") == cli


def test_up_and_options_as_on_the_command_line(mug, tmp_path, capsys):
    result, run = mug
    result.export(tmp_path / "api.ply", up="y", pad_sh3=True)
    assert cli_main(["export", str(run), str(tmp_path / "cli.ply"), "--up=y", "--pad-sh3"]) == 0
    assert (tmp_path / "api.ply").read_bytes() == (tmp_path / "cli.ply").read_bytes()


def test_save_ply_writes_what_export_writes_and_the_run_frame_on_request(mug, tmp_path, capsys):
    result, run = mug
    assert cli_main(["export", str(run), str(tmp_path / "cli.ply")]) == 0
    result.save_ply(tmp_path / "mug.ply")
    assert (tmp_path / "mug.ply").read_bytes() == (tmp_path / "cli.ply").read_bytes()
    assert b"comment splatgen up=-y" in (tmp_path / "mug.ply").read_bytes()[:400]
    result.save_ply(tmp_path / "raw.ply", up="z")
    assert (tmp_path / "raw.ply").read_bytes() == (run / "splats.ply").read_bytes()


def test_an_option_a_format_does_not_take_is_refused_in_one_line(mug, tmp_path, capsys):
    result, run = mug
    with pytest.raises(SplatgenError, match=r"\.spz takes no option pad_sh3; its options: none"):
        result.export(tmp_path / "a.spz", pad_sh3=True)
    with pytest.raises(SplatgenError, match="frames"):
        result.export(tmp_path / "a.glb", frames=3)
    with pytest.raises(SplatgenError, match=r"up does not apply to \.mp4"):
        result.export(tmp_path / "a.mp4", up="y", **SMALL["video"])
    assert cli_main(["export", str(run), str(tmp_path / "b.ply"), "--frames", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("splatgen: error: .ply takes no option frames; its options: pad_sh3") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_help_shows_the_format_table(capsys):
    with pytest.raises(SystemExit):
        cli_main(["export", "--help"])
    out = capsys.readouterr().out
    for f in FORMATS:
        row = re.search(rf"^  {re.escape(f.extension)} +(.+)\n +(.+)$", out, re.M)
        assert row, f.extension
        assert row.group(1) == f.holds.replace("`", "")
        assert row.group(2) == (f"{f.default_up} up, upright in: " if f.default_up else "plays in: ") + \
            f.opens.replace("`", "")
    assert f"(default {OPTIONS['mesh_resolution']})" in out and f"(default {OPTIONS['fps']:g})" in out


def test_the_readme_format_table_is_the_format_table():
    row = re.compile(r"^\| `mug(\.[a-z0-9.]+)` \| (.+?) \| (.+?) \| (.+?) \|$", re.M)
    rows = row.findall(README.read_text(encoding="utf-8"))
    assert rows == [(f.extension, f.holds, f.default_up or "—", f.opens) for f in FORMATS]
