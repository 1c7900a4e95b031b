"""`companion respond`: a call file in, call + answer out, the same engine on a virtual clock."""

from __future__ import annotations

import json
import subprocess
import sys

import mido
import pytest
from support import ROOT, write_config, write_tune

from companion.commands.cli import main


@pytest.fixture
def call_file(tmp_path):
    return write_tune(tmp_path / "call.mid", 5)  # not one of the vocabulary's tunes


def run_json(capsys, *args) -> list[dict]:
    assert main(["respond", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_respond_writes_call_and_answer(tmp_path, capsys, model_pkg, call_file):
    out = tmp_path / "r.mid"
    fixed = write_config(tmp_path / "c.yaml", time={"tempo": "fixed", "phrase_end": "fixed"})
    notes = run_json(capsys, str(call_file), "-o", str(out), "--model", str(model_pkg),
                     "--seed", "11", "--config", str(fixed))
    assert notes and set(notes[0]) == {"pitch", "start_beats", "duration_beats", "velocity"}
    mf = mido.MidiFile(out)
    assert len(mf.tracks) == 2
    names = [next(m.name for m in t if m.type == "track_name") for t in mf.tracks]
    assert names == ["call", "answer"]
    call_ons = [m for m in mf.tracks[0] if m.type == "note_on" and m.velocity > 0]
    answer_ons = [m for m in mf.tracks[1] if m.type == "note_on" and m.velocity > 0]
    assert len(answer_ons) == len(notes)
    assert [m.note for m in answer_ons] == [n["pitch"] for n in notes]
    lo = min(m.note for m in call_ons) - 12
    hi = max(m.note for m in call_ons) + 12
    assert all(lo <= n["pitch"] <= hi and 0 <= n["pitch"] <= 127 for n in notes)
    # the answer starts on a beat after the call's end + phrase_end_beats (1.5 by default,
    # with the fixed phrase end)
    ticks, end = 0, 0
    for m in mf.tracks[0]:
        ticks += m.time
        if m.type == "note_off":
            end = ticks
    call_end = end / mf.ticks_per_beat
    assert notes[0]["start_beats"] >= call_end + 1.5 - 1e-6
    assert notes[0]["start_beats"] == pytest.approx(round(notes[0]["start_beats"]), abs=1e-6)


def test_same_seed_same_output(tmp_path, capsys, model_pkg, call_file):
    a = run_json(capsys, str(call_file), "-o", str(tmp_path / "a.mid"), "--model",
                 str(model_pkg), "--seed", "5")
    b = run_json(capsys, str(call_file), "-o", str(tmp_path / "b.mid"), "--model",
                 str(model_pkg), "--seed", "5")
    assert a == b
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()


def test_options_override_the_config(tmp_path, capsys, model_pkg, call_file):
    cfg = write_config(tmp_path / "c.yaml", model_pkg, answer={"length": 4, "min_beats": 1,
                                                                 "temperature": 0})
    notes = run_json(capsys, str(call_file), "-o", str(tmp_path / "x.mid"), "--config",
                     str(cfg), "--tempo", "90")
    start = notes[0]["start_beats"]
    assert all(n["start_beats"] - start < 4 for n in notes)
    again = run_json(capsys, str(call_file), "-o", str(tmp_path / "y.mid"), "--config",
                     str(cfg), "--tempo", "90", "--seed", "99")
    assert [n["pitch"] for n in again] == [n["pitch"] for n in notes]  # temperature 0


def test_respond_reads_a_json_call(tmp_path, capsys, model_pkg):
    call = ROOT / "companion" / "calls" / "3-chords.json"
    notes = run_json(capsys, str(call), "-o", str(tmp_path / "c.mid"), "--model",
                     str(model_pkg), "--seed", "1")
    assert notes
    assert main(["respond", str(call), "-o", str(tmp_path / "c.mid"), "--model",
                 str(model_pkg), "--seed", "1"]) == 0
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["no-call", "no-model", "bad-tempo"])
def test_respond_errors_are_one_line_and_exit_2(tmp_path, capsys, model_pkg, call_file,
                                                 problem):
    args = [str(call_file), "-o", str(tmp_path / "o.mid"), "--model", str(model_pkg)]
    if problem == "no-call":
        args[0] = str(tmp_path / "missing.mid")
    elif problem == "no-model":
        args[-1] = str(tmp_path / "nomodel")
    else:
        args += ["--tempo", "1000"]
    assert main(["respond", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert {"no-call": "missing.mid", "no-model": "nomodel", "bad-tempo": "--tempo"}[problem] in err


def test_python_m_companion_respond(tmp_path, model_pkg, call_file):
    r = subprocess.run(
        [sys.executable, "-m", "companion", "respond", str(call_file), "--model",
         str(model_pkg), "--seed", "2", "--json", "-o", str(tmp_path / "p.mid")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)


def test_beats_answers_an_excerpt_of_the_call(tmp_path, capsys, model_pkg, call_file):
    out = tmp_path / "x.mid"
    notes = run_json(capsys, str(call_file), "-o", str(out), "--model", str(model_pkg),
                     "--seed", "3", "--beats", "8")
    call = mido.MidiFile(out).tracks[0]
    ticks, ends = 0, []
    for m in call:
        ticks += m.time
        if m.type == "note_off" or (m.type == "note_on" and m.velocity == 0):
            ends.append(ticks / mido.MidiFile(out).ticks_per_beat)
    assert ends and max(ends) <= 8 + 1e-6  # nothing of the call after its 8th beat
    # trading bars: on the bar line the call ends on (bars of 4 from its first note)
    assert notes and notes[0]["start_beats"] == pytest.approx(8.0)
    assert main(["respond", str(call_file), "--model", str(model_pkg), "--beats", "0"]) == 2
    assert "--beats" in capsys.readouterr().err
