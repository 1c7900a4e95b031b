"""Choosing the next curve: temperature and nucleus (top-p) sampling under a pitch-range mask.

Every buffer is allocated once per vocabulary: a step of the answer fills them in place.
"""

from __future__ import annotations

import numpy as np

from companion.encoding.curves import MIN_TIME, Vocabulary

#: Below this temperature sampling is the argmax (a division by ~0 would overflow).
MIN_TEMPERATURE = 1e-4
#: Onsets this close (beats) are one: a curve this near a planned last onset reaches it.
ENDING_EPS = 1e-6


class Sampler:
    """Samples tokens of one vocabulary with a seeded numpy Generator.

    ``allowed(pitch, lo, hi)`` marks the curves that lead from ``pitch`` to a pitch in
    ``lo..hi`` (and move forward in time); ``sample(logits, mask)`` draws among them.
    """

    def __init__(
        self, vocab: Vocabulary, rng: np.random.Generator, temperature: float, top_p: float
    ):
        self.rng = rng
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        n, v = len(vocab.curves), vocab.size
        self.n_curves = n
        self.pitch_diff = np.zeros(v, dtype=np.int64)
        self.pitch_diff[:n] = vocab.curves[:, 0].astype(np.int64)
        self.time_diff = np.zeros(v, dtype=np.float64)
        self.time_diff[:n] = vocab.curves[:, 1]
        self.log_time = np.log2(np.maximum(self.time_diff, MIN_TIME))
        # Specials (bos...) and curves that do not move forward never start an answer note.
        self.playable = np.zeros(v, dtype=bool)
        self.playable[:n] = vocab.curves[:, 1] >= MIN_TIME
        if not self.playable.any():
            raise ValueError("the vocabulary has no curve that moves forward in time")
        self._unplayable = ~self.playable
        self._target = np.empty(v, dtype=np.int64)
        self._dist = np.empty(v, dtype=np.int64)
        self._tmp = np.empty(v, dtype=np.int64)
        self._mask = np.empty(v, dtype=bool)
        self._mask2 = np.empty(v, dtype=bool)
        self._not = np.empty(v, dtype=bool)
        self._scores = np.empty(v, dtype=np.float64)
        self._sorted = np.empty(v, dtype=np.float64)
        #: of the last ``ending``: the curves played onto the planned last onset
        self.landing = np.zeros(v, dtype=bool)
        self._short = np.empty(v, dtype=bool)
        self._end = np.empty(v, dtype=bool)
        self._gap = np.empty(v, dtype=np.float64)

    def allowed(self, pitch: int, lo: int, hi: int) -> np.ndarray:
        """Playable curves whose target pitch is in ``lo..hi``; if none is, those that come
        nearest to the range. The returned mask is an internal buffer, valid until the next call.
        """
        np.add(self.pitch_diff, pitch, out=self._target)
        # distance outside the range: max(lo - target, 0) + max(target - hi, 0)
        np.subtract(lo, self._target, out=self._dist)
        np.maximum(self._dist, 0, out=self._dist)
        np.subtract(self._target, hi, out=self._tmp)
        np.maximum(self._tmp, 0, out=self._tmp)
        np.add(self._dist, self._tmp, out=self._dist)
        np.copyto(self._dist, np.iinfo(np.int64).max, where=self._unplayable)
        best = self._dist.min()
        np.equal(self._dist, best, out=self._mask)
        return self._mask

    def near_time(self, mask: np.ndarray, beats: float) -> np.ndarray:
        """Of ``mask``, the curves whose time difference is nearest to ``beats`` (log scale):
        the first answer note's curve must match the real gap before it. Falls back to
        ``mask`` itself if that leaves nothing.
        """
        np.subtract(self.log_time, np.log2(max(beats, MIN_TIME)), out=self._scores)
        np.abs(self._scores, out=self._scores)
        np.logical_not(mask, out=self._not)
        np.copyto(self._scores, np.inf, where=self._not)
        best = self._scores.min()
        if not np.isfinite(best):
            return mask
        np.less_equal(self._scores, best + 1e-9, out=self._mask2)
        return self._mask2

    def ending(self, mask: np.ndarray, beats: float, rest: np.ndarray | None) -> np.ndarray:
        """Of ``mask``, as the next curve before a planned last onset ``beats`` ahead: the
        curves short of it, and those that reach it and land there (``landing``: played onto
        it, however far past it they go). Where a curve reaches it onto a ``rest`` (a stable
        degree; None: no key), only such curves land; where none does, none lands while a
        curve short of it is left (the walk goes on), else any that reaches it lands. An
        internal buffer, valid until the next call."""
        short, land, out = self._short, self.landing, self._end
        np.subtract(self.time_diff, beats, out=self._gap)
        np.less(self._gap, -ENDING_EPS, out=short)
        np.logical_and(short, mask, out=short)
        np.logical_not(short, out=land)
        np.logical_and(land, mask, out=land)  # the curves that reach it
        if rest is not None:
            np.logical_and(land, rest, out=out)
            if out.any():
                np.copyto(land, out)
            elif short.any():
                land[:] = False
        np.logical_or(short, land, out=out)
        return out

    def sample(self, logits: np.ndarray, mask: np.ndarray) -> int:
        """One token among ``mask``: argmax at temperature ~0, else the top-p nucleus of
        ``softmax(logits / temperature)``.
        """
        s = self._scores
        np.copyto(s, logits)
        np.logical_not(mask, out=self._not)
        np.copyto(s, -np.inf, where=self._not)
        if self.temperature < MIN_TEMPERATURE:
            return int(np.argmax(s))
        s -= s.max()
        s /= self.temperature
        np.exp(s, out=s)
        order = np.argsort(s)[::-1]  # numpy has no in-place argsort: the one allocation per step
        kept = np.take(s, order, out=self._sorted)
        np.cumsum(kept, out=kept)
        # the smallest set whose mass reaches top_p: at least the most likely token, and
        # never the zero-probability (masked) tail
        n = min(int(np.searchsorted(kept, self.top_p * kept[-1], side="left")) + 1, len(kept))
        u = self.rng.random() * kept[n - 1]
        i = int(np.searchsorted(kept[:n], u, side="right"))
        return int(order[min(i, n - 1)])
