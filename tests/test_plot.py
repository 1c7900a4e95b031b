"""`companion respond --plot`: a piano roll of the call and its answer."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import ROOT, write_tune

from companion.commands.cli import main
from companion.commands.plot import piano_roll
from companion.encoding.phrases import PhraseNote

PNG = b"\x89PNG\r\n\x1a\n"


def test_piano_roll_draws_a_png(tmp_path):
    call = [PhraseNote(62, 0, 1, 80), PhraseNote(66, 1, 1, 80)]
    answer = [PhraseNote(69, 3, 0.5, 70), PhraseNote(67, 3.5, 1, 60)]
    out = piano_roll(tmp_path / "sub" / "roll.png", call, answer, "t", key="D major")
    assert out.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="no notes"):
        piano_roll(tmp_path / "x.png", [], [])


def test_respond_plot(tmp_path, capsys, model_pkg):
    call = write_tune(tmp_path / "call.mid", 5)
    png = tmp_path / "roll.png"
    assert main(["respond", str(call), "-o", str(tmp_path / "r.mid"), "--model",
                 str(model_pkg), "--seed", "1", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG


def test_live_does_not_import_matplotlib():
    code = ("import sys, companion.commands.live, companion.commands.respond, "
            "companion.commands.cli; "
            "sys.exit('matplotlib' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
