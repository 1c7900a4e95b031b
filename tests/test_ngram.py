"""The n-gram baselines: proper distributions, the Kneser-Ney arithmetic, and LSTM scoring."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from train.ngram import KneserNey, Unigram, kn_discounts, score

BOS = 9
V = 10


def seqs_of(*songs: list[int]) -> list[np.ndarray]:
    return [np.array([BOS, *s], np.int64) for s in songs]


def reference_kn(seqs: list[np.ndarray], order: int, V: int, bos: int):
    """A plain-dict interpolated modified Kneser-Ney with the same conventions, for checking."""
    pad = max(order - 2, 0)
    grams = []
    for s in seqs:
        p = [bos] * pad + [int(t) for t in s]
        for i in range(pad + 1, len(p)):
            grams.append(tuple(p[i - order + 1 : i + 1]))
    counts = {order: Counter(grams)}
    for k in range(order - 1, 0, -1):
        ext = {g[-(k + 1) :] for g in grams}
        cont = Counter(g[1:] for g in ext)
        raw = Counter(g[-k:] for g in grams)
        counts[k] = {g: (raw[g] if k >= 2 and g[0] == bos else n) for g, n in cont.items()}
    disc = {}
    for k, cs in counts.items():
        coc = Counter(cs.values())
        disc[k] = kn_discounts(coc[1], coc[2], coc[3], coc[4])

    def prob(history: list[int], w: int) -> float:
        hist = [bos] * pad + list(history)
        p = 1.0 / V
        for k in range(1, order + 1):
            h = tuple(hist[len(hist) - (k - 1) :]) if k > 1 else ()
            entries = {g[-1]: n for g, n in counts[k].items() if g[:-1] == h}
            if not entries:
                continue
            total = sum(entries.values())
            d = disc[k]
            dn = {w2: d[min(n, 3) - 1] for w2, n in entries.items()}
            held = sum(dn.values())
            seen = entries.get(w, 0)
            p = (seen - dn.get(w, 0.0)) / total + held / total * p
        return p

    return prob


CORPUS = seqs_of([1, 2, 3, 1, 2, 3, 4], [1, 2, 3, 5], [2, 3, 1, 2, 6], [7, 1, 2, 3], [1, 2, 3, 1])
HISTORIES = [[BOS], [BOS, 1], [BOS, 1, 2], [BOS, 2, 3, 1, 2], [BOS, 8, 8], [BOS, 0, 4, 7, 6],
             [BOS, 7], [BOS, 1, 2, 3, 1, 2, 3]]


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_kn_distribution_sums_to_one(order):
    m = KneserNey(order, V).fit(CORPUS)
    for h in HISTORIES:
        d = m.distribution(h)
        assert d.shape == (V,)
        assert np.all(d > 0)
        assert d.sum() == pytest.approx(1.0, abs=1e-12)


def test_unigram_distribution_and_laplace():
    m = Unigram(V).fit(CORPUS)
    for h in HISTORIES:
        assert m.distribution(h).sum() == pytest.approx(1.0, abs=1e-12)
    n = sum(len(s) - 1 for s in CORPUS)
    assert m.distribution([BOS])[0] == pytest.approx(1 / (n + V))  # never seen: add-one
    assert m.distribution([BOS])[1] == pytest.approx((7 + 1) / (n + V))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_kn_matches_reference(order):
    m = KneserNey(order, V).fit(CORPUS)
    ref = reference_kn(CORPUS, order, V, BOS)
    for h in HISTORIES:
        d = m.distribution(h)
        for w in range(V):
            assert d[w] == pytest.approx(ref(h, w), rel=1e-10)


@pytest.mark.parametrize("order", [1, 3, 5])
def test_logprobs_and_top1_agree_with_distribution(order):
    m = KneserNey(order, V).fit(CORPUS)
    test = seqs_of([1, 2, 3, 4, 8, 1, 2], [7, 7, 1], [0])
    for s in test:
        lp = m.logprobs(s)
        hits = m.top1(s)
        assert len(lp) == len(hits) == len(s) - 1
        for i in range(1, len(s)):
            d = m.distribution(s[:i])
            assert lp[i - 1] == pytest.approx(np.log(d[s[i]]), rel=1e-12)
            assert hits[i - 1] == (int(np.argmax(d)) == s[i])
    # batched scoring equals per-sequence scoring
    many = m.logprobs_many(test)
    assert np.allclose(many, np.concatenate([m.logprobs(s) for s in test]))


def test_kn_prefers_seen_continuation():
    train = seqs_of([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [6, 8, 3, 7])
    for order in (2, 3, 5):
        m = KneserNey(order, V).fit(train)
        assert int(np.argmax(m.distribution([BOS, 1, 2, 3]))) == 4
        assert m.top1(train[0]).all()
    # the trigram context tells 3 -> 7 (after 8) from 3 -> 4 (after 2); a bigram cannot
    for order in (3, 5):
        assert int(np.argmax(KneserNey(order, V).fit(train).distribution([BOS, 6, 8, 3]))) == 7


def test_kn_first_token_uses_song_starts():
    # bos-initial n-grams keep raw counts: 1 starts 3 songs, 2 starts one
    train = seqs_of([1, 5], [1, 6], [1, 7], [2, 5])
    d = KneserNey(3, V).fit(train).distribution([BOS])
    assert d[1] > d[2] > d[0]


def test_discounts_regular_and_edge_cases():
    d1, d2, d3 = kn_discounts(1000, 400, 200, 120)
    y = 1000 / 1800
    assert d1 == pytest.approx(1 - 2 * y * 400 / 1000)
    assert d2 == pytest.approx(2 - 3 * y * 200 / 400)
    assert d3 == pytest.approx(3 - 4 * y * 120 / 200)
    for coc in [(5, 0, 0, 0), (0, 0, 0, 0), (0, 3, 0, 1), (1, 0, 7, 0), (2, 50, 0, 0)]:
        ds = kn_discounts(*coc)
        for i, d in enumerate(ds, start=1):
            assert 0 < d < i


def test_token_seen_once_only():
    # every n-gram a singleton: D1 = 1 by the formula, clamped so the seen token keeps mass
    train = seqs_of([3])
    for order in (1, 2, 5):
        m = KneserNey(order, V).fit(train)
        for h in ([BOS], [BOS, 3], [BOS, 4, 4]):
            d = m.distribution(h)
            assert d.sum() == pytest.approx(1.0, abs=1e-12)
            assert np.all(np.isfinite(np.log(d)))
        d = m.distribution([BOS])
        assert int(np.argmax(d)) == 3
        assert np.isfinite(m.logprobs(np.array([BOS, 0, 3, 8]))).all()
        for ds in m.discounts:
            assert all(0 < x < i for i, x in enumerate(ds, start=1))


def markov_songs(rng, n_songs: int, length: int, V: int, bos: int) -> list[np.ndarray]:
    """Songs from a sparse second-order chain: the next token mostly follows from the last two."""
    nxt = rng.integers(0, V - 1, size=(V, V, 3))
    out = []
    for _ in range(n_songs):
        s = list(rng.integers(0, V - 1, size=2))
        while len(s) < length:
            s.append(int(nxt[s[-2], s[-1], rng.choice(3, p=[0.7, 0.2, 0.1])]))
        out.append(np.array([bos, *s], np.int64))
    return out


def test_five_gram_beats_unigram_on_structured_data():
    rng = np.random.default_rng(0)
    Vs = 40
    songs = markov_songs(rng, 260, 80, Vs, Vs - 1)
    train, test = songs[:200], songs[200:]
    uni = score(Unigram(Vs).fit(train), test)
    kn2 = score(KneserNey(2, Vs).fit(train), test)
    kn5 = score(KneserNey(5, Vs).fit(train), test)
    assert uni["tokens"] == kn5["tokens"] == 60 * 80
    assert kn5["nll"] < kn2["nll"] < uni["nll"]
    assert kn5["top1"] > 2 * uni["top1"]
    assert kn5["ppl"] == pytest.approx(np.exp(kn5["nll"]))


def test_score_rejects_empty():
    with pytest.raises(ValueError):
        score(Unigram(V).fit(CORPUS), seqs_of([]))
    with pytest.raises(ValueError):
        KneserNey(3, V).fit(seqs_of([]))


class BigramStepModel:
    """A stand-in step model: logits from a bigram table, plus a state that counts steps."""

    def __init__(self, table: np.ndarray, bos: int):
        self.table = table
        self.vocab = SimpleNamespace(size=table.shape[0], bos=bos)

    def zero_state(self, batch: int = 1):
        z = np.zeros((1, batch, 2), np.float32)
        return SimpleNamespace(h=z, c=z.copy())

    def run_batch(self, tokens, h, c):
        # the logits depend on the state, so a state not reset between songs shows up
        logits = self.table[tokens] + 0.1 * h[0, :, :1]
        return logits.astype(np.float32), h + 1.0, c

    def reference(self, seqs):
        lps, hits = [], []
        for s in seqs:
            for t in range(len(s) - 1):
                lg = self.table[s[t]] + 0.1 * t
                lg = lg.astype(np.float32).astype(np.float64)
                lse = np.log(np.exp(lg - lg.max()).sum()) + lg.max()
                lps.append(lg[s[t + 1]] - lse)
                hits.append(int(np.argmax(lg)) == s[t + 1])
        return -np.mean(lps), np.mean(hits), len(lps)


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_lstm_score_batches_songs_like_one_at_a_time(batch):
    from train.evaluate import lstm_score

    rng = np.random.default_rng(1)
    model = BigramStepModel(rng.normal(size=(V, V)), BOS)
    songs = [np.array([BOS, *rng.integers(0, BOS, size=n)]) for n in (5, 1, 12, 3, 7, 0, 9)]
    got = lstm_score(model, songs, batch=batch)
    nll, top1, n = model.reference([s for s in songs if len(s) >= 2])
    assert got["tokens"] == n == 37
    assert got["nll"] == pytest.approx(nll, rel=1e-6)
    assert got["top1"] == pytest.approx(top1)
