"""lab.graphstall sets the clock tests' rig up and counts the rigs whose graph stalled."""

from __future__ import annotations

import re
import subprocess

import pytest
from support import jack_tools as _tools

from lab import graphstall


@pytest.mark.jack
def test_graphstall_sets_the_clock_rig_up_and_counts_its_stalls(tmp_path, capsys):
    """One rig (the companion, the judge, jack_transport, the clock, the performer) on a
    fresh synchronous server, set up, held and taken down; the line counts it, and nothing
    of it is left running."""
    _tools()
    assert graphstall.main(["--runs", "1", "--keep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    m = re.search(r"256 frames, synchronous: (\d) of 1 rigs stalled", out)
    assert m, out
    assert len(list(tmp_path.glob("stalled-*.log"))) == int(m.group(1))
    left = subprocess.run(["pgrep", "-f", "companion-graphstall"], capture_output=True)
    assert left.returncode == 1, left.stdout
