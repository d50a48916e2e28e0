"""One ``splatgen generate``: its input is checked once, and the world loads only for the world's prompts.

The CLI checks the input before it claims a run folder and hands the checked config and device down
(:func:`splatgen.api.check_input`); nothing below checks or resolves them again.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import splatgen.api
import splatgen.batch
import splatgen.cli
import splatgen.components
import splatgen.config
import splatgen.devices
import splatgen.trainer
from splatgen.cli import main as cli_main
from test_cli_errors import TINY

#: (module, name) of each check a generation's input goes through, and of the config merge behind them.
CHECKS = [("splatgen.api", "check_prompt"), ("splatgen.api", "resolve_config"), ("splatgen.config", "load_config"),
          ("splatgen.devices", "resolve_device"), ("splatgen.devices", "check_memory")]


@pytest.fixture()
def calls(monkeypatch):
    """Counts the calls of each of :data:`CHECKS`, wherever the package reaches it from (every module that
    imported it by name is patched too)."""
    counts = {name: 0 for _, name in CHECKS}
    for module, name in CHECKS:
        original = getattr(sys.modules[module], name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        for mod in [m for k, m in sys.modules.items() if k == "splatgen" or k.startswith("splatgen.")]:
            if getattr(mod, name, None) is original:
                monkeypatch.setattr(mod, name, counted)
    return counts


@pytest.mark.parametrize("entry", ["cli", "api"])
def test_the_input_is_checked_once_per_generation(entry, calls, tmp_path, capsys):
    out = tmp_path / "run"
    if entry == "cli":
        code = cli_main(["generate", "a red mug", "--config", "world", *TINY, "--out", str(out)])
        assert code == 0, capsys.readouterr().err
    else:
        splatgen.api.generate("a red mug", config="world", overrides=TINY, out_dir=out)
    assert (out / "splats.ply").is_file()
    assert calls == {name: 1 for _, name in CHECKS}


def test_a_run_of_a_prompt_outside_the_world_loads_none_of_it(tmp_path):
    """The world's ray caster, oracle, metrics and evaluator CLIP load for world prompts (their guidance and
    evaluation) only; its grammar, which tells a world prompt from another, is all any other run loads."""
    code = (
        "import sys, splatgen;"
        "splatgen.generate('a DSLR photo of a corgi', out_dir=sys.argv[1], overrides=sys.argv[2:]);"
        "print(sorted(m for m in sys.modules if m.startswith('splatgen.world')))"
    )
    # the bundled prior denoises its 4 views together: the run renders 4 (TINY's one would be refused)
    tiny = [t for t in TINY if not t.startswith(("guidance.world", "run.evaluate", "camera.batch_size"))]
    tiny.append("camera.batch_size=4")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), *tiny, "run.steps=1", "run.eval_every=1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "splats.ply").is_file()
    assert r.stdout.split("\n")[-2] == "['splatgen.world', 'splatgen.world.grammar']", r.stdout
