"""Long work is not silent where no progress bar shows: without a terminal the trainer logs a line per tenth of
the run (or per 30 s), through the Python API as through the CLI."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

import splatgen
from splatgen import trainer
from splatgen.trainer import ProgressLines, format_seconds
from test_batch import TINY

LINE = re.compile(r"step (\d+)/20 \((\d+)%\), loss=\S+, n=48, t=\d+; \d+ s elapsed, ETA \d+ s")


@pytest.mark.parametrize("progress, expected", [("auto", list(range(2, 21, 2))), ("off", [])])
def test_the_api_logs_a_progress_line_per_tenth_without_a_terminal(caplog, monkeypatch, progress, expected):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal, whatever runs the tests
    with caplog.at_level(logging.INFO, logger="splatgen"):
        splatgen.generate("a red mug", config="world", overrides=[*TINY, "run.steps=20", f"run.progress={progress}"])
    found = [LINE.fullmatch(r.getMessage()) for r in caplog.records if r.getMessage().startswith("step ")]
    assert all(found), [r.getMessage() for r in caplog.records]
    assert [int(m.group(1)) for m in found] == expected
    assert [int(m.group(2)) for m in found] == [10 * k for k in range(1, len(expected) + 1)]


def test_a_slow_tenth_still_gets_a_line_every_30_seconds(caplog, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(trainer.time, "monotonic", lambda: clock[0])
    with caplog.at_level(logging.INFO, logger="splatgen"):
        lines = ProgressLines(total=1000, initial=400)  # a resumed run: ETA from this session's pace
        for step in range(3):
            clock[0] += 31.0
            lines.set_postfix(loss="0.5")
            lines.update(1)
        lines.update(97)  # step 500: another tenth, 0 s later
    assert [r.getMessage() for r in caplog.records] == [
        "step 401/1000 (40%), loss=0.5; 31 s elapsed, ETA 5 h 09 min",
        "step 402/1000 (40%), loss=0.5; 1 min 02 s elapsed, ETA 5 h 08 min",
        "step 403/1000 (40%), loss=0.5; 1 min 33 s elapsed, ETA 5 h 08 min",
        "step 500/1000 (50%), loss=0.5; 1 min 33 s elapsed, ETA 7 min 45 s",
    ]


def test_format_seconds():
    assert [format_seconds(s) for s in (0.4, 59.4, 60, 3599, 3600, 7620)] == \
        ["0 s", "59 s", "1 min 00 s", "59 min 59 s", "1 h 00 min", "2 h 07 min"]
