"""Key awareness: estimate the key the performer plays in, and bias answers to its scale.

The key comes from a pitch-class histogram of the session's notes, weighted by duration
and decayed with age (a half-life in beats), correlated with the 24 rotated
Krumhansl–Kessler profiles (the Krumhansl–Schmuckler algorithm). Curves are relative, so
whether a curve lands on a scale tone depends on the pitch it starts from: a table
``[mode, 12, V]`` ("from this degree of the scale, does token v land on a scale tone")
is built once per vocabulary; a step then only picks a row of it.
"""

from __future__ import annotations

import math

import numpy as np

from companion.encoding.names import MAJOR, MINOR

#: Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
PROFILES = np.array([
    [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88],
    [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17],
])

#: Scale tones above the tonic. Minor is the natural minor plus the raised leading tone
#: (harmonic minor's 7th), which minor-key tunes use at cadences.
SCALES = (
    frozenset({0, 2, 4, 5, 7, 9, 11}),
    frozenset({0, 2, 3, 5, 7, 8, 10, 11}),
)

#: Degrees a phrase comes to rest on (semitones above the tonic): tonic, third and fifth.
STABLE = (frozenset({0, 4, 7}), frozenset({0, 3, 7}))

#: Keys whose correlation is within this of the best are near ties (a short call without
#: its third fits E major and E minor alike): of those, the key whose scale holds most of
#: the weighted notes wins.
TIE = 0.02


def in_scale(pitches: np.ndarray | list[int], tonic: int, mode: int) -> np.ndarray:
    """Which pitches are scale tones of the key."""
    table = np.array([d in SCALES[mode] for d in range(12)])
    return table[(np.asarray(pitches, dtype=np.int64) - tonic) % 12]


class KeyEstimator:
    """Duration- and recency-weighted pitch-class histogram -> the best-correlated key."""

    def __init__(self, half_life_beats: float = 32.0):
        self.half_life = float(half_life_beats)
        self.hist = np.zeros(12)
        self.last_beat: float | None = None
        # 24 zero-mean, unit-norm rotated profiles: correlation is then one matrix product
        rows = [np.roll(PROFILES[mode], tonic) for mode in (MAJOR, MINOR) for tonic in range(12)]
        z = np.array(rows) - np.mean(rows, axis=1, keepdims=True)
        self._profiles = z / np.linalg.norm(z, axis=1, keepdims=True)
        self._scales = np.array([[(d - tonic) % 12 in SCALES[mode] for d in range(12)]
                                 for mode in (MAJOR, MINOR) for tonic in range(12)], dtype=float)

    def reset(self) -> None:
        self.hist[:] = 0.0
        self.last_beat = None

    def add(self, pitch: int, beat: float, duration_beats: float, weight: float = 1.0) -> None:
        """A note at ``beat`` (any origin, increasing) sounding for ``duration_beats``, its
        evidence scaled by ``weight`` (an accompaniment note counts less than the melody)."""
        if self.last_beat is not None and self.half_life > 0 and beat > self.last_beat:
            self.hist *= 0.5 ** ((beat - self.last_beat) / self.half_life)
        if self.last_beat is None or beat > self.last_beat:
            self.last_beat = beat
        self.hist[pitch % 12] += max(duration_beats, 0.0) * weight

    def estimate(self) -> tuple[int, int] | None:
        """(tonic, mode) of the best-correlated profile; None before any note or when the
        notes are all one pitch class repeated evenly (no evidence either way)."""
        h = self.hist - self.hist.mean()
        norm = float(np.linalg.norm(h))
        if norm == 0.0 or not math.isfinite(norm):
            return None
        corr = self._profiles @ (h / norm)
        fit = self._scales @ self.hist  # weight on each key's scale tones
        near = corr >= corr.max() - TIE
        best = int(np.argmax(np.where(near, fit + 1e-6 * corr, -np.inf)))
        return best % 12, best // 12


class KeyBias:
    """The scale as a bias on the sampler's scores, vectorised over the vocabulary.

    ``strength`` 0 leaves the model's distribution as it is; s in (0, 1) multiplies the
    probability of curves that leave the scale by ``1 - s``; 1 keeps scale tones only
    (``restrict``), unless no allowed curve lands on one.
    """

    def __init__(self, pitch_diff: np.ndarray, playable: np.ndarray, strength: float):
        self.strength = float(strength)
        # lands[mode, degree, v]: from scale degree `degree` (semitones above the tonic),
        # token v lands on a scale tone. Specials never do (they are never playable).
        v = len(pitch_diff)
        deg = (np.arange(12)[:, None] + pitch_diff[None, :]) % 12
        self.lands = np.zeros((2, 12, v), dtype=bool)
        for mode in (MAJOR, MINOR):
            table = np.array([d in SCALES[mode] for d in range(12)])
            self.lands[mode] = table[deg] & playable[None, :]
        self.off = ~self.lands
        # rests[mode, degree, v]: from `degree`, token v lands on a degree of STABLE
        self.rests = np.zeros((2, 12, v), dtype=bool)
        for mode in (MAJOR, MINOR):
            table = np.array([d in STABLE[mode] for d in range(12)])
            self.rests[mode] = table[deg] & playable[None, :]
        self._mask = np.empty(v, dtype=bool)
        self.key: tuple[int, int] | None = None

    def row(self, pitch: int) -> np.ndarray | None:
        """Off-scale curves from ``pitch`` in the current key (None without a key)."""
        if self.key is None:
            return None
        tonic, mode = self.key
        return self.off[mode, (pitch - tonic) % 12]

    def resting(self, pitch: int) -> np.ndarray | None:
        """Curves from ``pitch`` onto a stable degree of the current key; None without a
        key, or at strength 0 (the key then changes nothing)."""
        if self.key is None or self.strength <= 0.0:
            return None
        tonic, mode = self.key
        return self.rests[mode, (pitch - tonic) % 12]

    def restrict(self, mask: np.ndarray, pitch: int) -> np.ndarray:
        """At strength 1: the curves of ``mask`` that land on a scale tone; ``mask`` itself
        if none does (the range wins over the key). Internal buffer, valid until next call."""
        if self.strength < 1.0 or self.key is None:
            return mask
        tonic, mode = self.key
        np.logical_and(mask, self.lands[mode, (pitch - tonic) % 12], out=self._mask)
        return self._mask if self._mask.any() else mask

    def apply(self, scores: np.ndarray, pitch: int) -> None:
        """Add ``log(1 - strength)`` to the log-scores of off-scale curves, in place."""
        s = self.strength
        if s <= 0.0 or s >= 1.0 or self.key is None:
            return
        np.add(scores, math.log1p(-s), out=scores, where=self.row(pitch))
