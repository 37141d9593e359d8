"""Progress output: a bar on a terminal by default, sparse lines in logs, silence with verbose=False."""

import io
import sys

import numpy as np
import pytest

import mdcvkit as mk
from mdcvkit._progress import LOG_INTERVAL, progress_bar, resolve_verbose
from mdcvkit.biasing import OPES, ExtendedABF, IterativeCVLearning
from mdcvkit.training import Trainer


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_default_follows_whether_stderr_is_a_terminal(monkeypatch, terminal):
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    assert resolve_verbose(None) is terminal
    assert resolve_verbose(True) is True and resolve_verbose(False) is False and resolve_verbose(np.bool_(True))
    bar = progress_bar(range(3), desc="work")
    assert bar.disable is not terminal
    assert list(bar) == [0, 1, 2]
    assert ("work" in stream.getvalue()) is terminal


def test_forced_progress_in_a_log_updates_sparsely(monkeypatch):
    stream = io.StringIO()  # a log file: not a terminal
    monkeypatch.setattr(sys, "stderr", stream)
    bar = progress_bar(total=1000, verbose=True, desc="steps")
    assert not bar.disable and bar.mininterval == LOG_INTERVAL
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert 1 <= stream.getvalue().count("steps") <= 3  # the first, maybe one in between, and the last line
    silent = progress_bar(total=10, verbose=False)
    assert silent.disable


@pytest.mark.parametrize("make", [
    lambda v: Trainer(verbose=v),
    lambda v: ExtendedABF.for_toy(mk.systems.DoubleWell2D(), "x1", grid=(-2, 2, 40), verbose=v),
    lambda v: OPES.for_toy(mk.systems.DoubleWell2D(), "x1", grid=(-2, 2, 40), barrier=2.0, verbose=v),
    lambda v: IterativeCVLearning(mk.systems.DoubleWell2D(), verbose=v),
])  # fmt: skip
def test_verbose_is_checked(make):
    assert make(None).verbose is None
    with pytest.raises(TypeError, match=r"verbose='yes' must be True, False or None"):
        make("yes")


def test_progress_is_the_deprecated_name_of_verbose():
    with pytest.warns(DeprecationWarning, match="progress= is deprecated; pass verbose="):
        eabf = ExtendedABF.for_toy(mk.systems.DoubleWell2D(), "x1", grid=(-2, 2, 40), progress=False)
    assert eabf.verbose is False
