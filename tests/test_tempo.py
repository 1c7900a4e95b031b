"""The tempo estimate from a call (``time.tempo: auto``) and the adaptive phrase end."""

from __future__ import annotations

import numpy as np
import pytest

from companion.engine.tempo import Pace, estimate_beat, intervals, readings


def played(beats: list[float], bpm: float, jitter_s: float = 0.0, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    t = np.array(beats) * 60.0 / bpm + rng.normal(0, jitter_s, len(beats))
    return sorted(t.tolist())


EIGHTHS_AND_QUARTERS = [0, 1, 1.5, 2, 3, 3.5, 4, 4.5, 5, 6, 7]


@pytest.mark.parametrize("bpm", [80, 100, 120, 140])
def test_beat_of_a_plain_call(bpm):
    est = estimate_beat(played(EIGHTHS_AND_QUARTERS, bpm, 0.008), 60, 180, 110)
    assert 60 / est == pytest.approx(bpm, rel=0.03)


def test_dotted_and_triplet_rhythms():
    dotted = [0, 0.75, 1, 1.75, 2, 3, 3.75, 4]
    assert 60 / estimate_beat(played(dotted, 96), 60, 180, 110) == pytest.approx(96, rel=0.02)
    # triplets among plain values (triplets alone are eighths at 1.5 times the tempo)
    triplets = [0, 1, 1.5, 2, 2 + 1 / 3, 2 + 2 / 3, 3, 4, 4.5, 5, 6]
    assert 60 / estimate_beat(played(triplets, 100), 60, 180, 110) == pytest.approx(100,
                                                                                     rel=0.02)


def test_range_and_too_few_intervals():
    assert estimate_beat([0.0, 0.5, 1.0], 60, 180, 110) is None  # two intervals
    assert estimate_beat([0.0, 0.01, 0.02, 0.03, 0.04], 60, 180, 110) is None  # ornaments
    # quarters at 200 BPM are outside 60..180: read as half notes at 100
    est = estimate_beat(played([0, 1, 2, 3, 4, 5], 200), 60, 180, 110)
    assert 60 / est == pytest.approx(100, rel=0.02)
    assert 60 <= 60 / estimate_beat(played([0, 1, 2, 3], 30), 60, 180, 110) <= 180


#: The two-bar call of the issue: quarters and eighths, its last note held to the bar line.
TWO_BARS = [0, 1, 2, 2.5, 3, 4, 5, 5.5, 6]


@pytest.mark.parametrize("bpm", [60, 80, 100, 120, 140, 160, 180])
def test_quarter_notes_are_heard_as_beats(bpm):
    """Four quarter notes are read in their tempo, not as eighths at half of it."""
    est = estimate_beat(played([0, 1, 2, 3], bpm, 0.008, seed=bpm), 60, 180, 110)
    assert 60 / est == pytest.approx(bpm, rel=0.03)


@pytest.mark.parametrize("bpm", [80, 120, 160])
def test_two_bars_of_quarters_and_eighths(bpm):
    est = estimate_beat(played(TWO_BARS, bpm, 0.008, seed=bpm), 60, 180, 110)
    assert 60 / est == pytest.approx(bpm, rel=0.03)


def test_quarters_among_sixteenths_keep_the_beat():
    """Sixteenths, eighths and quarters at 60 BPM are not read as eighths, quarters and half
    notes at 120 (the same intervals): half notes are rare. Without the quarters, they are
    (eighths and quarters are about equally common; the sixteenth a little less)."""
    beats = [0, 1, 1.5, 1.75, 2, 3, 3.5, 3.75, 4, 4.5, 5, 6]
    assert 60 / estimate_beat(played(beats, 60, 0.008), 60, 180, 110) == pytest.approx(
        60, rel=0.03)
    no_quarters = [0, 0.5, 0.75, 1, 1.5, 1.75, 2, 2.5, 2.75, 3, 3.5]
    assert 60 / estimate_beat(played(no_quarters, 60, 0.008), 60, 180, 110) == pytest.approx(
        120, rel=0.03)


def test_a_run_of_eighths_alone_is_heard_as_beats_and_the_held_tempo_keeps_it():
    """A run of eighths at 60 BPM is the same sound as quarters at 120: alone it is read as
    beats; after calls at 60 it is read in the tempo held."""
    run = played([k / 2 for k in range(12)], 60, 0.008)
    assert 60 / estimate_beat(run, 60, 180, 110) == pytest.approx(120, rel=0.03)
    assert 60 / estimate_beat(run, 60, 180, 110, held_s=1.0) == pytest.approx(60, rel=0.03)
    # a run of quarters after calls at 60 stays a run of quarters at 60, not halves at 120
    quarters = played([0, 1, 2, 3, 4, 5], 60, 0.008)
    assert 60 / estimate_beat(quarters, 60, 180, 110, held_s=1.0) == pytest.approx(60,
                                                                                   rel=0.03)


@pytest.mark.parametrize("bpm", [90, 100, 150])
def test_a_held_tempo_yields_to_a_call_in_another(bpm):
    """After calls at 120, a call that fits 120 poorly moves the tempo to its own."""
    est = estimate_beat(played(EIGHTHS_AND_QUARTERS, bpm, 0.008), 60, 180, 110, held_s=0.5)
    assert 60 / est == pytest.approx(bpm, rel=0.03)


def test_a_jump_of_more_than_half_an_octave_is_heard_nearer_the_tempo_held():
    """Eighths and quarters at 150 BPM are sixteenths and eighths at 75: after calls at 90,
    the reading nearer 90 wins (a change of tempo is more likely small than large)."""
    call = played(EIGHTHS_AND_QUARTERS, 150)
    assert 60 / estimate_beat(call, 60, 180, 110) == pytest.approx(150, rel=0.01)
    assert 60 / estimate_beat(call, 60, 180, 110, held_s=60 / 90) == pytest.approx(75,
                                                                                   rel=0.01)


def test_a_held_tempo_follows_a_small_drift():
    est = estimate_beat(played(EIGHTHS_AND_QUARTERS, 126), 60, 180, 110, held_s=0.5)
    assert 60 / est == pytest.approx(126, rel=0.01)


def test_readings_are_the_octaves_of_a_call():
    """Each reading is a local maximum of the evidence, refined: a call of eighths and
    quarters at 120 is read best at 120, next at 60 (quarters and halves)."""
    rs = sorted(readings(played(EIGHTHS_AND_QUARTERS, 120), 60, 180), key=lambda r: -r[1])
    assert 60 / rs[0][0] == pytest.approx(120, rel=0.005)
    assert 60 / rs[1][0] == pytest.approx(60, rel=0.005)
    assert readings([0.0, 0.5, 1.0], 60, 180) == []


def test_intervals_drop_ornaments_and_pauses():
    assert intervals([0.0, 0.02, 0.5, 4.0, 4.5]) == pytest.approx([0.48, 0.5])


def test_nottingham_calls_near_the_prior(nottingham):
    """Calls cut from tunes (12 notes), played with 10 ms of jitter: within a third of an
    octave of the prior the beat is found (to 3%) for most; the rest at double or half."""
    found = total = 0
    for f in nottingham[:40:4]:
        from companion.encoding.melody import read_melodies

        m = read_melodies(f)[0]
        for bpm in (95, 110, 125):
            t = played(list(m.onsets[:12]), bpm, 0.01, seed=bpm)
            est = estimate_beat(t, 60, 180, 110)
            total += 1
            found += est is not None and abs(60 / est / bpm - 1) < 0.03
    assert found >= 0.85 * total, (found, total)


def test_pace_scales_the_wait_within_bounds():
    pace = Pace(2.5, 0.35, 4.0, notes=8)
    assert pace.wait_s(0.75) == 0.75  # nothing heard yet: the fixed wait
    assert pace.wait_s(10.0) == 4.0  # ... within the bounds
    for ioi in (0.2, 0.2, 0.22, 0.18):  # a fast reel
        pace.add(ioi)
    assert pace.wait_s(0.75) == pytest.approx(0.5)
    for ioi in (1.2,) * 8:  # a slow ballad: the recent notes only
        pace.add(ioi)
    assert pace.wait_s(0.75) == pytest.approx(3.0)
    pace.add(0.01)  # an ornament does not count
    assert pace.wait_s(0.75) == pytest.approx(3.0)
    fast = Pace(2.5, 0.35, 4.0)
    for _ in range(4):
        fast.add(0.08)
    assert fast.wait_s(0.75) == 0.35
