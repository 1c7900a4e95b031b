"""The tempo estimate from a call (``time.tempo: auto``) and the adaptive phrase end."""

from __future__ import annotations

import numpy as np
import pytest

from companion.engine.tempo import Pace, estimate_beat, intervals


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
