"""N-gram baselines over curve token sequences: the figures an LSTM has to beat to be worth it.

A sequence is a 1-D int array that begins with the ``bos`` token. ``bos`` is context only:
every later token is predicted from its history, and every token ``0..V-1`` (``bos``
included) is a possible outcome, exactly as for the LSTM's softmax, so the numbers compare.

History padding: a song's first tokens have fewer than ``order - 1`` tokens of history; they
are padded on the left by repeating the song's first token (``bos``). A padded context is an
ordinary context to the model, so the first note of a song has its own statistics
(``bos bos bos bos -> first curve``) and histories never reach into the previous song.

Kneser-Ney is implemented with sorted integer keys and ``np.searchsorted`` rather than
dictionaries, so fitting 500k tokens and scoring 50k take seconds in numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Discount used in place of D_i / i when the count-of-counts leave Chen & Goodman's estimate
#: undefined or degenerate (a tiny corpus with no n-gram seen twice, say).
DEFAULT_DISCOUNT_FRACTION = 0.5
#: Discounts are clamped into [MIN_DISCOUNT, i - MIN_DISCOUNT] for counts i = 1, 2, 3+: a
#: positive discount keeps mass for unseen tokens, and one below the count keeps every seen
#: n-gram above its lower-order estimate. Real corpora never reach the bounds.
MIN_DISCOUNT = 0.05
#: Histories whose full next-token distribution is built at once when computing top-1.
_CHUNK = 2048


class TokenModel:
    """Shared interface: per-sequence scores, and batched ones that ``score`` uses."""

    V: int

    def logprobs(self, seq: np.ndarray) -> np.ndarray:
        """Natural-log probability of each of ``seq[1:]`` given the tokens before it."""
        return self.logprobs_many([seq])

    def top1(self, seq: np.ndarray) -> np.ndarray:
        """Whether the most probable next token is the actual one, for each of ``seq[1:]``."""
        return self.top1_many([seq])

    def logprobs_many(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def top1_many(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def distribution(self, history: Sequence[int]) -> np.ndarray:
        """``P(next | history)`` over all V tokens; ``history`` starts with ``bos``."""
        raise NotImplementedError


def _targets(seqs: Sequence[np.ndarray]) -> np.ndarray:
    parts = [np.asarray(s, dtype=np.int64)[1:] for s in seqs]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


class Unigram(TokenModel):
    """Token frequencies with add-one smoothing: what knowing no context at all is worth."""

    def __init__(self, V: int):
        self.V = int(V)
        self.probs = np.full(self.V, 1.0 / self.V)

    def fit(self, seqs: Sequence[np.ndarray]) -> Unigram:
        t = _targets(seqs)
        if len(t) and (t.min() < 0 or t.max() >= self.V):
            raise ValueError(f"tokens must lie in 0..{self.V - 1}")
        counts = np.bincount(t, minlength=self.V).astype(np.float64) + 1.0
        self.probs = counts / counts.sum()
        return self

    def logprobs_many(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        return np.log(self.probs[_targets(seqs)])

    def top1_many(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        return _targets(seqs) == int(np.argmax(self.probs))

    def distribution(self, history: Sequence[int]) -> np.ndarray:
        return self.probs.copy()


def kn_discounts(n1: int, n2: int, n3: int, n4: int) -> tuple[float, float, float]:
    """Chen & Goodman's modified Kneser-Ney discounts D1, D2, D3+ from the count-of-counts.

    ``n_i`` is the number of n-grams seen exactly i times. ``Y = n1 / (n1 + 2 n2)``,
    ``D_i = i - (i + 1) Y n_{i+1} / n_i``. Where ``n_i`` or ``n_{i+1}`` is zero (tiny corpora)
    the estimate is undefined or degenerate (``D_i = i``: a seen n-gram worth nothing), so
    ``i * DEFAULT_DISCOUNT_FRACTION`` stands in; all are clamped into
    ``[MIN_DISCOUNT, i - MIN_DISCOUNT]``.
    """
    n = (n1, n2, n3, n4)
    y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.0
    out = []
    for i in (1, 2, 3):
        if n[i - 1] > 0 and n[i] > 0:
            d = i - (i + 1) * y * n[i] / n[i - 1]
        else:
            d = i * DEFAULT_DISCOUNT_FRACTION
        out.append(min(max(d, MIN_DISCOUNT), i - MIN_DISCOUNT))
    return out[0], out[1], out[2]


class _Level:
    """One order k: n-grams as sorted keys ``history_id * V + token`` with their terms."""

    keys: np.ndarray  # sorted int64
    alpha: np.ndarray  # (count - D(count)) / total(history), per n-gram
    gamma: np.ndarray  # backoff weight per history id
    discounts: tuple[float, float, float]


class KneserNey(TokenModel):
    """Interpolated modified Kneser-Ney (Chen & Goodman 1998), orders 1..``order``.

    The highest order uses raw counts; lower orders use continuation counts (the number of
    distinct tokens seen before the n-gram), except n-grams that start with ``bos``, which
    keep raw counts (only padding precedes them, as in KenLM). Three discounts per order
    come from that order's count-of-counts; the unigram level interpolates with 1/V.
    """

    def __init__(self, order: int, V: int):
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        self.order = int(order)
        self.V = int(V)
        self.bos = -1
        self._hist_keys: list[np.ndarray] = []  # per history length j >= 1: sorted keys
        self._levels: list[_Level] = []  # per order k = 1..order (index k - 1)

    # -- contexts --------------------------------------------------------------------------

    def _contexts(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        """``[n, order]``: column 0 each predicted token, column j the token j steps before it."""
        pad = max(self.order - 2, 0)
        flat, pos, start = [], [], 0
        for s in seqs:
            s = np.asarray(s, dtype=np.int64)
            if len(s) < 2:
                continue
            p = np.concatenate([np.full(pad, s[0], np.int64), s])
            flat.append(p)
            pos.append(np.arange(start + pad + 1, start + len(p)))
            start += len(p)
        if not flat:
            return np.zeros((0, self.order), np.int64)
        arr, idx = np.concatenate(flat), np.concatenate(pos)
        if arr.min() < 0 or arr.max() >= self.V:
            raise ValueError(f"tokens must lie in 0..{self.V - 1}")
        return np.stack([arr[idx - j] for j in range(self.order)], axis=1)

    def _history_ids(self, ctx: np.ndarray) -> np.ndarray:
        """``[n, order]``: id of the history of each length j (column j), -1 if never seen."""
        n = len(ctx)
        ids = np.zeros((n, self.order), np.int64)
        cur = np.zeros(n, np.int64)
        for j in range(1, self.order):
            table = self._hist_keys[j - 1]
            key = cur * self.V + ctx[:, j]
            at = np.minimum(np.searchsorted(table, key), max(len(table) - 1, 0))
            found = (cur >= 0) & (len(table) > 0) & (table[at] == key)
            cur = np.where(found, at, -1)
            ids[:, j] = cur
        return ids

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, seqs: Sequence[np.ndarray]) -> KneserNey:
        firsts = {int(s[0]) for s in seqs if len(s) >= 1}
        if len(firsts) > 1:
            raise ValueError(f"sequences must all start with the same bos token, got {firsts}")
        self.bos = firsts.pop() if firsts else -1
        ctx = self._contexts(seqs)
        V, n = self.V, len(ctx)
        if n == 0:
            raise ValueError("nothing to fit: no sequence has a token after bos")
        # history ids: length j is (id of length j-1, token j back), numbered densely
        hid = np.zeros((n, self.order), np.int64)
        n_hist = [1]
        self._hist_keys = []
        for j in range(1, self.order):
            uniq, inv = np.unique(hid[:, j - 1] * V + ctx[:, j], return_inverse=True)
            self._hist_keys.append(uniq)
            hid[:, j] = inv.reshape(-1)
            n_hist.append(len(uniq))
        w = ctx[:, 0]
        self._levels = []
        for k in range(1, self.order + 1):
            key = hid[:, k - 1] * V + w
            uk, first, raw = np.unique(key, return_index=True, return_counts=True)
            if k == self.order:
                counts = raw
            else:
                # distinct left extensions: unique (k+1)-grams, mapped back to their k-gram
                _, ext_first = np.unique(hid[:, k] * V + w, return_index=True)
                _, cont = np.unique(key[ext_first], return_counts=True)
                counts = cont
                if k >= 2:
                    counts = np.where(ctx[first, k - 1] == self.bos, raw, cont)
            self._levels.append(self._level(uk, counts, n_hist[k - 1]))
        return self

    def _level(self, keys: np.ndarray, counts: np.ndarray, n_hist: int) -> _Level:
        coc = [int(np.count_nonzero(counts == i)) for i in (1, 2, 3, 4)]
        d = kn_discounts(*coc)
        disc = np.where(counts == 1, d[0], np.where(counts == 2, d[1], d[2]))
        hist = keys // self.V
        total = np.bincount(hist, weights=counts, minlength=n_hist)
        held = np.bincount(hist, weights=disc, minlength=n_hist)
        lv = _Level()
        lv.keys = keys
        safe = np.maximum(total, 1.0)
        lv.alpha = (counts - disc) / safe[hist]
        lv.gamma = np.where(total > 0, held / safe, 1.0)
        lv.discounts = d
        return lv

    # -- scoring ---------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not self._levels:
            raise RuntimeError("KneserNey: call fit() first")

    def _probs(self, ctx: np.ndarray) -> np.ndarray:
        ids = self._history_ids(ctx)
        w = ctx[:, 0]
        p = np.full(len(ctx), 1.0 / self.V)
        for k, lv in enumerate(self._levels, start=1):
            h = ids[:, k - 1]
            known = h >= 0
            key = h * self.V + w
            at = np.minimum(np.searchsorted(lv.keys, key), len(lv.keys) - 1)
            hit = known & (lv.keys[at] == key)
            alpha = np.where(hit, lv.alpha[at], 0.0)
            p = np.where(known, alpha + lv.gamma[np.maximum(h, 0)] * p, p)
        return p

    def logprobs_many(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        self._check_fitted()
        return np.log(self._probs(self._contexts(seqs)))

    def _distributions(self, ids: np.ndarray) -> np.ndarray:
        """``[m, V]`` next-token distributions of histories given by their id rows."""
        m = len(ids)
        P = np.full((m, self.V), 1.0 / self.V)
        for k, lv in enumerate(self._levels, start=1):
            h = ids[:, k - 1]
            rows = np.flatnonzero(h >= 0)
            if len(rows) == 0:
                continue
            hk = h[rows]
            P[rows] *= lv.gamma[hk][:, None]
            lo = np.searchsorted(lv.keys, hk * self.V)
            hi = np.searchsorted(lv.keys, (hk + 1) * self.V)
            lens = hi - lo
            total = int(lens.sum())
            if total == 0:
                continue
            ends = np.cumsum(lens)
            at = np.arange(total) - np.repeat(ends - lens, lens) + np.repeat(lo, lens)
            P[np.repeat(rows, lens), lv.keys[at] % self.V] += lv.alpha[at]
        return P

    def top1_many(self, seqs: Sequence[np.ndarray]) -> np.ndarray:
        """Top-1 hits; each distinct history's distribution is built once, in chunks."""
        self._check_fitted()
        ctx = self._contexts(seqs)
        if len(ctx) == 0:
            return np.zeros(0, bool)
        ids = self._history_ids(ctx)
        uniq, inv = np.unique(ids, axis=0, return_inverse=True)
        best = np.empty(len(uniq), np.int64)
        for s in range(0, len(uniq), _CHUNK):
            best[s : s + _CHUNK] = np.argmax(self._distributions(uniq[s : s + _CHUNK]), axis=1)
        return best[inv.reshape(-1)] == ctx[:, 0]

    def distribution(self, history: Sequence[int]) -> np.ndarray:
        self._check_fitted()
        seq = np.concatenate([np.asarray(history, np.int64), [0]])
        ctx = self._contexts([seq])[-1:]
        return self._distributions(self._history_ids(ctx))[0]

    @property
    def discounts(self) -> list[tuple[float, float, float]]:
        """(D1, D2, D3+) of each order, lowest first."""
        return [lv.discounts for lv in self._levels]


def score(model: TokenModel, seqs: Sequence[np.ndarray]) -> dict:
    """Mean nats per predicted token, perplexity, top-1 accuracy and token count over ``seqs``."""
    lp = model.logprobs_many(seqs)
    hits = model.top1_many(seqs)
    if len(lp) == 0:
        raise ValueError("nothing to score: no sequence has a token after bos")
    nll = float(-lp.mean())
    return {"nll": nll, "ppl": float(math.exp(nll)), "top1": float(hits.mean()),
            "tokens": int(len(lp))}
