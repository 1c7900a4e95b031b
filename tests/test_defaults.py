"""The shipped time defaults serve a performer at any tempo from 60 to 180 BPM without a
clock, and a MIDI clock still takes precedence; and the measurement behind them
(`python -m bench.defaults`) runs and tells the settings apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import make_config

from bench import defaults as bench_defaults
from companion.encoding.phrases import CALLS_DIR, read_json
from companion.engine.tempo import intervals

CALLS = ("1-rising-reel.json", "2-jig.json")


def pace_wait(cfg, events) -> float:
    """The documented adaptive wait: phrase_end_ioi times the median of the last pace_notes
    usable inter-onset intervals, within phrase_end_min_s..phrase_end_max_s."""
    tc = cfg.time
    onsets = [t for t, m in events if m.type == "note_on"]
    med = float(np.median(intervals(onsets)[-tc.pace_notes:]))
    return min(max(tc.phrase_end_ioi * med, tc.phrase_end_min_s), tc.phrase_end_max_s)


@pytest.mark.parametrize("bpm", [60, 120, 180])
@pytest.mark.parametrize("name", CALLS)
def test_shipped_defaults_answer_in_the_calls_tempo(model, model_pkg, name, bpm):
    cfg = make_config(model_pkg)  # nothing but the model set: the shipped defaults
    call = read_json(CALLS_DIR / name)
    rng = np.random.default_rng(bpm)
    events, call_end = bench_defaults.performance(call, bpm, 0.015, rng)
    out = bench_defaults.play(model, cfg, events, call_end, seed=1)
    assert not out.cut and out.bpm is not None
    assert out.bpm == pytest.approx(bpm, rel=0.05)  # in tempo: no octave error either
    wait = pace_wait(cfg, events)
    # the phrase end after the documented wait, then the answer on the next beat of the call
    assert wait - 1e-6 <= out.wait_s <= wait + 60.0 / out.bpm + 1e-6


def test_a_midi_clock_takes_precedence_over_the_calls_tempo(model, model_pkg):
    cfg = make_config(model_pkg)
    call = read_json(CALLS_DIR / CALLS[0])
    events, call_end = bench_defaults.performance(call, 130, 0.015, np.random.default_rng(0))
    out = bench_defaults.play(model, cfg, events, call_end, seed=1, clock_bpm=100)
    assert out.bpm == pytest.approx(100, rel=0.005)
    beats = out.start / 0.6  # the clock started (Start, first tick) at 0: beats 0.6 s apart
    assert beats == pytest.approx(round(beats), abs=1e-3)
    # without the clock, the same performance is answered at the call's tempo
    alone = bench_defaults.play(model, cfg, events, call_end, seed=1)
    assert alone.bpm == pytest.approx(130, rel=0.05)


def test_the_measurement_tells_the_settings_apart(model_pkg, capsys):
    sources = [str(CALLS_DIR / n) for n in CALLS]
    argv = ["--model", str(model_pkg), "--tunes", "1", "--tempi", "60", "180", "--json"]
    for s in sources:
        argv += ["--source", s]
    assert bench_defaults.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calls"] == 2
    rows = {(r["setting"], r["bpm"]): r for r in out["rows"]}
    names = ["shipped"] + [c.name for c in bench_defaults.CANDIDATES]
    assert set(rows) == {(n, b) for n in names for b in (60.0, 180.0)}
    for bpm in (60.0, 180.0):
        shipped = rows["shipped", bpm]
        assert shipped["in_tempo"] == 1.0 and shipped["cut"] == 0.0
        assert 0 < shipped["wait_s"] <= shipped["wait_p90_s"] < 4.0 + 1.0
    # the old default, a fixed 110 BPM: at 60 no answer is in tempo, and the one-beat rest
    # of the paused call (a second) is longer than its 1.5 beats of 110 (0.82 s)
    old = rows["fixed 110, end fixed 1.5", 60.0]
    assert old["in_tempo"] == 0.0 and old["cut"] == 1.0


def test_a_missing_source_is_one_line(model_pkg, capsys, tmp_path):
    missing = tmp_path / "nope"
    assert bench_defaults.main(["--model", str(model_pkg), "--source", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err and "no such file" in err
