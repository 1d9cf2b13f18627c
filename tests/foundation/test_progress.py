"""Progress output: plain lines with a total, a rate and an ETA off a terminal, a live bar on
one, and only the outermost step of a process shown."""

import io
import logging
import re
import sys

import pytest

from metafgnet.progress import Progress

LINE = re.compile(r"^work: (\d+)/10 step \(\d+%\), elapsed \d\d:\d\d, ETA [\d:?]+, "
                  r"([\d.]+|\?)\s?step/s$")


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="metafgnet")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "metafgnet"]


def test_plain_lines_off_a_terminal_carry_total_rate_and_eta(monkeypatch, capsys, lines):
    monkeypatch.setenv("METAFGNET_PROGRESS_EVERY", "0")
    with Progress("work", 10, unit="step", initial=2) as bar:
        for _ in range(8):
            bar.update()
    got = lines()
    assert len(got) == 9  # one per update, one at the end
    counts = [int(LINE.match(line).group(1)) for line in got]  # every line has every field
    assert counts[:8] == list(range(3, 11)) and counts[-1] == 10
    assert "\r" not in capsys.readouterr().err  # no bar redraws in captured output


def test_plain_lines_are_rate_limited(monkeypatch, lines):
    monkeypatch.setenv("METAFGNET_PROGRESS_EVERY", "3600")
    with Progress("work", 10, unit="step") as bar:
        for _ in range(10):
            bar.update()
    assert lines() == []  # a step shorter than the interval prints nothing at all


def test_only_the_outermost_step_shows(monkeypatch, lines):
    monkeypatch.setenv("METAFGNET_PROGRESS_EVERY", "0")
    with Progress("work", 10, unit="step") as outer:
        with Progress("inner", 5) as inner:
            inner.update(5)
        outer.update(10)
    assert lines() and all(line.startswith("work:") for line in lines())


def test_disabled_off_rank_zero_and_by_environment(monkeypatch, lines):
    monkeypatch.setenv("METAFGNET_PROGRESS_EVERY", "0")
    with Progress("work", 10, enabled=False) as bar:
        bar.update(10)
    monkeypatch.setenv("METAFGNET_PROGRESS", "off")
    with Progress("work", 10) as bar:
        bar.update(10)
    assert lines() == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_bar_on_a_terminal(monkeypatch, lines):
    monkeypatch.setenv("METAFGNET_PROGRESS_EVERY", "0")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with Progress("work", 10, unit="step") as bar:
        for _ in range(10):
            bar.update()
    shown = terminal.getvalue()
    assert "work:" in shown and "10/10" in shown and "\r" in shown  # tqdm redraws in place
    assert lines() == []  # no plain lines beside the bar
