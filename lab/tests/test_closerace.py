"""lab.closerace counts the processes that closing JACK ports crashed."""

from __future__ import annotations

import pytest
from support import jack_tools as _tools

from lab import closerace


@pytest.mark.jack
def test_closerace_counts_the_processes_a_close_crashed(capsys):
    """One process, one round, its closes 0.1 s apart (close_in_turn): it ends well, and the
    line says so."""
    _tools()  # jackd2's clients and jack_midi_clock: skipped without, failed in CI
    closerace.main(["--settle", "0.1", "--processes", "1", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "1 processes of 1 rounds, 0 crashed ({0: 1} by exit status)" in out, out
