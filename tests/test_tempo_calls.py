"""The call's tempo as the engine hears it without a clock (``time.tempo: auto``, the shipped
default), on the virtual clock: calls of quarters in their tempo, the performer's tempo held
from call to call, a real change followed; and the measurement (`python -m bench.tempo`)."""

from __future__ import annotations

import json

import pytest
from support import EngineRig, make_config

from bench import tempo as bench_tempo
from companion.config import TimeConfig
from companion.engine import tempo
from companion.engine.listener import MelodyNote
from companion.engine.timekeeper import Timekeeper

#: (pitch, start, duration) in beats. The issue's calls: four quarter notes (C D E G), and
#: two bars of quarters and eighths with the last note held to the bar line.
FOUR_QUARTERS = [(60, 0, 0.95), (62, 1, 0.95), (64, 2, 0.95), (67, 3, 0.95)]
TWO_BARS = [(60, 0, 0.95), (62, 1, 0.95), (64, 2, 0.45), (65, 2.5, 0.45), (67, 3, 0.95),
            (69, 4, 0.95), (67, 5, 0.45), (65, 5.5, 0.45), (64, 6, 2.0)]
#: A phrase of eighths and quarters, and a run of eighths (alone: quarters at twice the tempo).
PHRASE = [(67, 0, 0.45), (69, 0.5, 0.45), (71, 1, 0.95), (72, 2, 0.45), (71, 2.5, 0.45),
          (69, 3, 0.45), (67, 3.5, 0.45), (69, 4, 0.95), (71, 5, 0.95), (67, 6, 1.9)]
EIGHTHS = [(60 + k % 5, k / 2, 0.45) for k in range(12)]


def answer_bpm(rig: EngineRig, notes, bpm: float, t0: float) -> tuple[float, float]:
    """The call played at ``bpm`` from ``t0`` seconds and answered: (the answer's BPM, when
    the answer has played)."""
    rig.beat = 60.0 / bpm
    rig.play(notes, t0)
    _, answer = rig.finish()
    assert answer is not None and answer.notes
    return 60.0 / rig.engine.beat_s, max(n.end for n in answer.notes)


@pytest.mark.parametrize("bpm", [60, 120, 180])
def test_four_quarter_notes_are_answered_in_their_tempo(model, model_pkg, bpm):
    rig = EngineRig(model, make_config(model_pkg))
    assert answer_bpm(rig, FOUR_QUARTERS, bpm, 0.0)[0] == pytest.approx(bpm, rel=0.02)


@pytest.mark.parametrize("bpm", [80, 120, 160])
def test_two_bars_of_quarters_and_eighths_are_answered_in_their_tempo(model, model_pkg, bpm):
    rig = EngineRig(model, make_config(model_pkg))
    assert answer_bpm(rig, TWO_BARS, bpm, 0.0)[0] == pytest.approx(bpm, rel=0.02)


def test_the_performers_tempo_holds_across_a_call_that_alone_is_ambiguous(model, model_pkg):
    alone = EngineRig(model, make_config(model_pkg))
    assert answer_bpm(alone, EIGHTHS, 60, 0.0)[0] == pytest.approx(120, rel=0.02)
    rig = EngineRig(model, make_config(model_pkg))
    t = 0.0
    for notes in (PHRASE, PHRASE, EIGHTHS, FOUR_QUARTERS):
        bpm, t = answer_bpm(rig, notes, 60, t + 1.0)
        assert bpm == pytest.approx(60, rel=0.02)


def test_a_real_change_of_tempo_is_followed(model, model_pkg):
    """Changes within half an octave of the tempo held, down and up: the call's reading
    nearest the tempo held is its own."""
    rig = EngineRig(model, make_config(model_pkg))
    t = 0.0
    for notes, played in ((PHRASE, 120), (PHRASE, 120), (PHRASE, 90), (EIGHTHS, 90),
                          (PHRASE, 120), (PHRASE, 160), (FOUR_QUARTERS, 160),
                          (TWO_BARS, 160)):
        bpm, t = answer_bpm(rig, notes, played, t + 1.0)
        assert bpm == pytest.approx(played, rel=0.02)


def test_only_a_phrase_end_sets_the_tempo_held():
    """The estimates while a call is played use the tempo held, and leave it."""
    tk = Timekeeper(TimeConfig(), 110.0)
    call = [MelodyNote(60, k * 0.5, 80) for k in range(6)]  # quarters at 120
    assert tk.tempo(3.0, call) == pytest.approx(0.5, rel=0.01)
    assert tk.held_beat is None
    assert tk.tempo(3.0, call, lead=True) == pytest.approx(0.5, rel=0.01)
    assert tk.held_beat == pytest.approx(0.5, rel=0.01)
    fixed = Timekeeper(TimeConfig(tempo="fixed"), 110.0)
    assert fixed.tempo(3.0, call, lead=True) is None and fixed.held_beat is None


def test_the_measurement_runs_every_kind_of_call(model_pkg, tmp_path, capsys):
    """`python -m bench.tempo` on one tune of four phrases of eighths and quarters."""
    tune = tmp_path / "tune.json"
    notes = [[p, s + 8 * k, d, 80] for k in range(4) for p, s, d in PHRASE]
    tune.write_text(json.dumps({"name": "a tune", "notes": notes}))
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {model_pkg}\n")
    argv = ["--config", str(config), "--source", str(tune), "--tempi", "60", "120", "--json"]
    assert bench_tempo.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tunes"] == 1
    rows = {(r["kind"], r["bpm"]): r for r in out["rows"]}
    assert set(rows) == {(k, b) for k in bench_tempo.KINDS for b in (60.0, 120.0)}
    for (kind, bpm), r in rows.items():
        assert r["calls"] == {"sequence": 3, "change": 2}.get(kind, 1)
        # a run of eighths alone at 60 is read as quarters at 120: the documented ambiguity
        assert r["in_tempo"] == (0.0 if (kind, bpm) == ("eighths", 60.0) else 1.0), kind
        assert r["heard"] == 1.0 and r["short"] == (1.0 if kind in ("eighths", "held") else 0)
    assert rows["eighths", 60.0]["octave"] == 1.0
    # the estimator's prior, narrowed for one run and restored after it
    shipped = tempo.PRIOR_OCTAVES
    assert bench_tempo.main(argv[:-1] + ["--prior-octaves", "0.3"]) == 0
    assert tempo.PRIOR_OCTAVES == shipped
    out = capsys.readouterr().out
    assert "prior 0.3 octaves wide" in out and "| 60 |" in out


def test_a_phrase_is_cut_from_the_tune_on_its_own_beats():
    tune = bench_tempo.Phrase("t", [bench_tempo.PhraseNote(60 + k, 3 + k * 0.5, 0.5, 80)
                                    for k in range(36)])
    ps = bench_tempo.phrases(tune)
    assert len(ps) == 2  # 18 beats: two phrases of 8, then too few notes
    assert [n.start for n in ps[1].notes][:2] == [0.0, 0.5]
    assert bench_tempo.short(ps[0])  # eighths: no interval as long as a beat
    assert not bench_tempo.short(bench_tempo.run(tune, 8, 1.0))
