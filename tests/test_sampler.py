"""The sampler: argmax at temperature 0, the top-p nucleus, the pitch-range mask."""

from __future__ import annotations

import numpy as np
import pytest

from companion.encoding.curves import Vocabulary
from companion.engine.sampler import Sampler

CURVES = [[-2, 1.0], [-1, 0.5], [0, 1.0], [1, 0.5], [2, 1.0], [5, 2.0], [12, 1.0]]


@pytest.fixture
def vocab():
    return Vocabulary(np.array(CURVES, dtype=float))


def sampler(vocab, temperature=1.0, top_p=1.0, seed=0):
    return Sampler(vocab, np.random.default_rng(seed), temperature, top_p)


def test_argmax_at_temperature_zero(vocab):
    s = sampler(vocab, temperature=0.0)
    logits = np.array([0.1, 3.0, 0.2, 2.0, 0.0, 0.0, 0.0, 9.0])  # the last is bos
    mask = s.allowed(60, 0, 127)
    assert not mask[vocab.bos]
    assert all(s.sample(logits, mask) == 1 for _ in range(20))


def test_top_p_keeps_the_smallest_set_reaching_the_mass(vocab):
    # probabilities 0.5, 0.3, 0.1, 0.05, 0.05 on tokens 0..4; the rest ~0
    probs = np.array([0.5, 0.3, 0.1, 0.05, 0.05, 1e-12, 1e-12, 1e-12])
    logits = np.log(probs)
    s = sampler(vocab, temperature=1.0, top_p=0.75)
    mask = np.ones(vocab.size, dtype=bool)
    draws = np.array([s.sample(logits, mask) for _ in range(4000)])
    assert set(np.unique(draws)) == {0, 1}  # 0.5 < 0.75 <= 0.5 + 0.3
    # renormalised within the nucleus: 0.5/0.8 and 0.3/0.8
    assert abs(np.mean(draws == 0) - 0.625) < 0.04
    s0 = sampler(vocab, temperature=1.0, top_p=0.0)
    assert all(s0.sample(logits, mask) == 0 for _ in range(50))  # top_p 0: the argmax
    s1 = sampler(vocab, temperature=1.0, top_p=1.0)
    draws = [s1.sample(logits, mask) for _ in range(4000)]
    assert set(draws) == {0, 1, 2, 3, 4}


def test_temperature_sharpens(vocab):
    logits = np.log(np.array([0.4, 0.3, 0.3, 1e-9, 1e-9, 1e-9, 1e-9, 1e-9]))
    mask = np.ones(vocab.size, dtype=bool)
    hot = sampler(vocab, temperature=1.0)
    cold = sampler(vocab, temperature=0.2)
    p_hot = np.mean([hot.sample(logits, mask) == 0 for _ in range(3000)])
    p_cold = np.mean([cold.sample(logits, mask) == 0 for _ in range(3000)])
    assert p_cold > p_hot + 0.2


def test_range_mask_and_its_fallback(vocab):
    s = sampler(vocab)
    mask = s.allowed(60, 59, 61)  # targets 58 59 60 61 62 65 72
    assert list(np.flatnonzero(mask)) == [1, 2, 3]
    logits = np.zeros(vocab.size)
    logits[6] = 50.0  # the model wants +12: out of range, never sampled
    assert all(s.sample(logits, mask) in (1, 2, 3) for _ in range(200))
    # nothing reaches 100..110 from 60: the curves that come nearest (+12) are allowed
    assert list(np.flatnonzero(s.allowed(60, 100, 110))) == [6]
    # at the top of the MIDI range
    assert list(np.flatnonzero(s.allowed(127, 0, 127))) == [0, 1, 2]


def test_near_time_matches_the_gap(vocab):
    s = sampler(vocab)
    full = s.allowed(60, 0, 127).copy()
    assert list(np.flatnonzero(s.near_time(full, 1.9))) == [5]  # only +5 has 2.0
    assert list(np.flatnonzero(s.near_time(full, 0.6))) == [1, 3]
    narrow = s.allowed(60, 60, 60).copy()  # only token 2 (time 1.0)
    assert list(np.flatnonzero(s.near_time(narrow, 2.0))) == [2]


def test_same_seed_same_draws(vocab):
    logits = np.random.default_rng(3).normal(size=vocab.size)
    mask = np.ones(vocab.size, dtype=bool)
    a = [sampler(vocab, 0.9, 0.9, seed=5).sample(logits, mask) for _ in range(1)]
    s1, s2 = sampler(vocab, 0.9, 0.9, seed=5), sampler(vocab, 0.9, 0.9, seed=5)
    assert [s1.sample(logits, mask) for _ in range(50)] == [
        s2.sample(logits, mask) for _ in range(50)]
    assert a
