"""Key awareness: key names, the Krumhansl-Schmuckler estimate, the scale mask and bias."""

from __future__ import annotations

import math

import numpy as np
import pytest

from companion.encoding.curves import Vocabulary
from companion.encoding.key import KeyBias, KeyEstimator, in_scale
from companion.encoding.names import MAJOR, MINOR, key_name, note_name, parse_key
from companion.engine.sampler import Sampler


@pytest.mark.parametrize("text,expected", [
    ("C major", (0, MAJOR)), ("D", (2, MAJOR)), ("F# minor", (6, MINOR)), ("Bb", (10, MAJOR)),
    ("Em", (4, MINOR)), ("eb min", (3, MINOR)), (" A minor ", (9, MINOR)),
])
def test_parse_key(text, expected):
    assert parse_key(text) == expected
    assert parse_key(key_name(*expected)) == expected


@pytest.mark.parametrize("text", ["H major", "C dorian", "", "C##"])
def test_parse_key_rejects(text):
    with pytest.raises(ValueError, match="expected a key"):
        parse_key(text)


def test_note_name_middle_c_is_c4():
    assert [note_name(p) for p in (60, 69, 61, 0, 127)] == ["C4", "A4", "C#4", "C-1", "G9"]


def feed(est, pitches, start=0.0, dur=1.0):
    for i, p in enumerate(pitches):
        est.add(p, start + i * dur, dur)


def test_estimates_scales_and_tunes():
    est = KeyEstimator()
    assert est.estimate() is None
    feed(est, [62, 64, 66, 67, 69, 71, 73, 74, 69, 66, 62])  # D major scale + arpeggio
    assert est.estimate() == (2, MAJOR)
    est.reset()
    feed(est, [57, 59, 60, 62, 64, 65, 68, 69, 64, 60, 57])  # A harmonic minor
    assert est.estimate() == (9, MINOR)


def test_duration_and_recency_weighting():
    # G major scale played once, long ago; then E minor triad tones held long, recently
    est = KeyEstimator(half_life_beats=4.0)
    feed(est, [67, 69, 71, 72, 74, 76, 78, 79])
    feed(est, [64, 67, 71, 64, 71, 63, 64], start=200.0, dur=2.0)
    assert est.estimate() == (4, MINOR)
    # without decay, the whole session counts and the long notes still weigh more
    est2 = KeyEstimator(half_life_beats=0.0)
    feed(est2, [67, 69, 71, 72, 74, 76, 78, 79], dur=0.25)
    feed(est2, [64, 67, 71, 64, 71, 63, 64], start=200.0, dur=4.0)
    assert est2.estimate() == (4, MINOR)


def test_in_scale():
    assert list(in_scale([60, 61, 62, 66, 71, 72], 0, MAJOR)) == [True, False, True, False,
                                                                  True, True]
    assert list(in_scale([69, 71, 72, 68, 70], 9, MINOR)) == [True, True, True, True, False]


CURVES = [[-2, 1.0], [-1, 0.5], [0, 1.0], [1, 0.5], [2, 1.0], [5, 2.0], [6, 1.0], [12, 1.0]]


@pytest.fixture
def bias():
    vocab = Vocabulary(np.array(CURVES, dtype=float))
    s = Sampler(vocab, np.random.default_rng(0), 1.0, 1.0)
    return s, KeyBias(s.pitch_diff, s.playable, strength=1.0)


def test_lands_table_matches_a_direct_computation(bias):
    s, kb = bias
    for mode in (MAJOR, MINOR):
        for tonic in range(12):
            kb.key = (tonic, mode)
            for pitch in range(48, 72):
                direct = in_scale(pitch + s.pitch_diff, tonic, mode) & s.playable
                assert np.array_equal(~kb.row(pitch), direct)


def test_restrict_at_strength_one(bias):
    s, kb = bias
    kb.key = (0, MAJOR)
    mask = s.allowed(64, 0, 127).copy()  # from E: D# E E F F# A A# E'
    assert list(np.flatnonzero(kb.restrict(mask, 64))) == [0, 2, 3, 5, 7]
    # a range that leaves only off-scale curves: the range wins
    only = s.allowed(64, 63, 63).copy()  # -1 -> D#
    assert list(np.flatnonzero(kb.restrict(only, 64))) == [1]
    kb.key = None
    assert kb.restrict(mask, 64) is mask
    kb.key, kb.strength = (0, MAJOR), 0.5
    assert kb.restrict(mask, 64) is mask


def test_apply_scales_off_scale_probabilities(bias):
    s, kb = bias
    kb.key = (0, MAJOR)
    scores = np.zeros(s.pitch_diff.shape, dtype=np.float64)
    kb.strength = 0.75
    kb.apply(scores, 64)
    off = kb.row(64)
    assert np.allclose(scores[off], math.log(0.25)) and np.all(scores[~off] == 0)
    before = scores.copy()
    kb.strength = 0.0
    kb.apply(scores, 64)
    assert np.array_equal(scores, before)


def test_near_ties_go_to_the_key_whose_scale_fits():
    # a jig's first bars: E and B long, G and D natural: E minor (E major correlates as well)
    est = KeyEstimator()
    for p, s, d in [(71, 0, .5), (76, .5, 1), (76, 1.5, .5), (71, 2, 1), (71, 3, .5),
                    (67, 3.5, .5), (69, 4, .5), (71, 4.5, .5), (64, 5, 1.5), (66, 6.5, .5),
                    (64, 7, .5), (62, 7.5, .5)]:
        est.add(p, s, d)
    assert est.estimate() == (4, MINOR)
