"""Quantized answers that keep the performer's swing.

The model thinks in straight time: with a grid of ``step`` beats, the sampler may only take
curves that land the next onset on the grid (a mask over the vocabulary, like the range
mask), so the model's state hears exactly the rhythm that is played. Swing is applied
when the onsets are placed in time: each beat is warped so that its second eighth falls at
``ratio`` of the beat (0.5 straight, 2/3 triplet swing, 0.75 dotted), the sixteenths in
between proportionally. The triplet grid is not warped (it is swing written out).

The ratio is the performer's: the median position within the beat of the calls' off-beat
eighths (a beat with exactly one onset on it and one between 0.4 and 0.8 of it), kept from
call to call; below ``STRAIGHT_BELOW`` it is straight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Quantize settings and their grid step in beats.
STEPS = {"1/4": 1.0, "1/8": 0.5, "1/16": 0.25, "1/8T": 1.0 / 3.0}
MIN_RATIO, MAX_RATIO = 0.5, 0.75
#: Ratios below this are straight eighths played with a human hand.
STRAIGHT_BELOW = 0.54
_EPS = 1e-4


def estimate_swing(onsets: Sequence[float]) -> float | None:
    """The swing ratio of onsets in beats (beat 0 on the grid), or None without two off-beat
    eighths to measure."""
    beats: dict[int, list[float]] = {}
    for p in onsets:
        k = math.floor(p + 0.1)  # an onset just before the beat belongs to it
        beats.setdefault(k, []).append(p - k)
    found = [f2 for fs in beats.values() if len(fs) == 2
             for f1, f2 in [sorted(fs)] if abs(f1) < 0.1 and 0.4 <= f2 <= 0.8]
    if len(found) < 2:
        return None
    r = float(np.median(found))
    return MIN_RATIO if r < STRAIGHT_BELOW else min(r, MAX_RATIO)


class Grid:
    """Answer onsets on a grid of ``division`` with a swing ratio (fixed, or followed)."""

    def __init__(self, division: str, time_diff: np.ndarray, swing: float | str = "auto"):
        self.division = division
        self.step = STEPS[division]
        self.follow = swing == "auto"
        self.ratio = MIN_RATIO if self.follow else float(swing)
        self.time_diff = time_diff
        v = len(time_diff)
        self._pos = np.empty(v, dtype=np.float64)
        self._dist = np.empty(v, dtype=np.float64)
        self._mask = np.empty(v, dtype=bool)
        self._not = np.empty(v, dtype=bool)

    def hear(self, onsets: Sequence[float]) -> None:
        """A call's onsets in beats (its grid's beat 0 at 0): follow its swing."""
        if self.follow:
            r = estimate_swing(onsets)
            if r is not None:
                self.ratio = r

    def mask(self, onset: float, allowed: np.ndarray) -> np.ndarray:
        """Of ``allowed``, the curves that take an onset at ``onset`` (beats, on the grid) to
        the grid; if none does, those that come nearest. An internal buffer."""
        pos, d, other = self._pos, self._dist, self._not
        np.add(self.time_diff, onset, out=pos)
        np.divide(pos, self.step, out=pos)
        np.rint(pos, out=d)
        np.subtract(pos, d, out=d)
        np.abs(d, out=d)
        np.logical_not(allowed, out=other)
        np.copyto(d, np.inf, where=other)
        best = d.min()
        if not np.isfinite(best):
            return allowed
        np.less_equal(d, max(best, _EPS) + 1e-9, out=self._mask)
        return self._mask

    def snap(self, beats: float) -> float:
        """The grid point nearest ``beats``."""
        return round(beats / self.step) * self.step

    def place(self, beats: float) -> float:
        """Where a straight position (beats) is played: swung, beat by beat."""
        if self.division == "1/8T" or self.ratio == 0.5:
            return beats
        k = math.floor(beats + _EPS)
        f = beats - k
        r = self.ratio
        return k + (2 * f * r if f <= 0.5 else r + (f - 0.5) * 2 * (1 - r))

    def points(self, beats: float) -> list[float]:
        """The played grid points (beats) from 0 up to ``beats``: what on-grid means."""
        n = int(beats / self.step + _EPS) + 1
        return [self.place(i * self.step) for i in range(n)]
