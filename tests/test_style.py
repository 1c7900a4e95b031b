"""Live style adaptation: the session n-gram and its mixture with the model."""

from __future__ import annotations

import numpy as np
import pytest

from companion.engine.style import StyleMemory

V = 10


def test_empty_memory_leaves_the_model_alone():
    st = StyleMemory(V, order=3, weight=0.5)
    logits = np.random.default_rng(0).normal(size=V)
    out = np.empty(V)
    assert np.array_equal(st.mix(logits, [1, 2], out), logits)
    assert np.all(st.distribution([1]) == 0)


def test_distribution_is_a_distribution_and_prefers_long_contexts():
    st = StyleMemory(V, order=3)
    st.learn([1, 2, 3, 1, 2, 3, 1, 2, 4])
    for hist in ([], [2], [1, 2], [9, 1, 2], [7, 7, 7]):
        p = st.distribution(hist)
        assert p.sum() == pytest.approx(1.0) and np.all(p >= 0)
    p = st.distribution([3, 1, 2]).copy()  # after 3 1 2 came 3 twice
    assert p.argmax() == 3 and p[3] > 0.5
    p = st.distribution([1, 2]).copy()  # 3 twice, 4 once
    assert p[3] > p[4] > 0
    p = st.distribution([8]).copy()  # unseen context: the session's unigram
    assert p[1] == pytest.approx(3 / 9) and p[4] == pytest.approx(1 / 9)


def test_mix_weights_and_reset():
    st = StyleMemory(V, order=2, weight=0.0)
    st.learn([5, 5, 5, 5])
    logits = np.zeros(V)  # the model is uniform
    out = np.empty(V)
    assert np.array_equal(st.mix(logits, [5], out), logits)
    st.weight = 0.5
    p = np.exp(st.mix(logits, [5], out))
    assert p.sum() == pytest.approx(1.0)
    assert p[5] == pytest.approx(0.5 / V + 0.5) and p[0] == pytest.approx(0.5 / V)
    st.weight = 1.0  # the n-gram only, but tokens it never saw stay finite
    p = st.mix(logits, [5], out)
    assert np.all(np.isfinite(p)) and p.argmax() == 5
    st.reset()
    assert st.empty and np.array_equal(st.mix(logits, [5], out), logits)


def test_learning_is_incremental_per_phrase():
    st = StyleMemory(V, order=2)
    st.learn([1, 2])
    st.learn([3, 4])  # contexts do not cross phrases: (2,) was never followed by 3
    assert (2,) not in st.contexts and 4 in st.contexts[(3,)].counts
    assert st.contexts[()].total == 4


def _counts(st: StyleMemory) -> dict:
    return {ctx: dict(s.counts) for ctx, s in st.contexts.items()}


def test_memory_forgets_the_oldest_phrases_and_stays_bounded():
    rng = np.random.default_rng(1)
    phrases = [list(rng.integers(0, V, size=rng.integers(1, 30))) for _ in range(200)]
    st = StyleMemory(V, order=3, memory=100)
    for ph in phrases:
        st.learn(ph)
        assert st.tokens_seen <= 100
    # what is left is exactly a memory of the most recent phrases that fit
    kept, n = [], 0
    for ph in reversed(phrases):
        if n + len(ph) > 100:
            break
        kept.insert(0, ph)
        n += len(ph)
    fresh = StyleMemory(V, order=3, memory=100)
    for ph in kept:
        fresh.learn(ph)
    assert st.tokens_seen == n and _counts(st) == _counts(fresh)
    assert all(s.total == sum(s.counts.values()) > 0 for s in st.contexts.values())
    p = st.distribution([1, 2]).copy()
    assert p == pytest.approx(fresh.distribution([1, 2]))


def test_a_phrase_longer_than_the_memory_keeps_its_end():
    st = StyleMemory(V, order=2, memory=5)
    st.learn([1, 1, 1, 1, 1, 2, 3, 4, 5, 6])
    assert st.tokens_seen == 5 and set(st.contexts[()].counts) == {2, 3, 4, 5, 6}
