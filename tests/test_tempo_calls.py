"""The call's tempo as the engine hears it without a clock (``time.tempo: auto``, the shipped
default), on the virtual clock: calls of quarters in their tempo, the performer's tempo held
from call to call, a real change followed."""

from __future__ import annotations

import pytest
from support import EngineRig, make_config

from companion.config import TimeConfig
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
