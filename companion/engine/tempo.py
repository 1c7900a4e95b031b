"""The performer's time without a clock: the beat from a call's inter-onset intervals, and
the performer's pace, which sets how long a silence ends a call.

Estimator (``tempo: auto``). A beat period ``b`` explains an inter-onset interval ``x`` when
``x / b`` is near one of the note values of ``RATIOS`` (a sixteenth to a whole note,
triplets and dotted values included). Each candidate period between ``lo_bpm`` and
``hi_bpm`` (0.5% apart) scores the mean, over the call's intervals, of the log of
``FLOOR + max_q weight(q) * exp(-(log2(x / (b q)) / SIGMA)^2 / 2)``, plus a log-normal prior
around the configured tempo, ``PRIOR_OCTAVES`` wide. The weights are how common each note
value is in folk melodies, eighths first: ratios alone cannot tell eighths at 60 BPM from
quarters at 120, so the period that reads the call as the most usual note values wins; as a
mean of logs, the evidence of every interval counts against the prior (which only breaks
near ties). The best candidate is then refined by least
squares on the note values it assigned. Intervals under ``MIN_IOI_S`` (ornaments, rolled
chords) or over ``MAX_IOI_S`` (pauses) do not count; with fewer than ``MIN_IOIS`` left there
is no estimate. Measured over 60..180 BPM by ``python -m bench.defaults`` (docs/defaults.md).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

#: Note values, in beats, that a call's intervals are read as; and how common each is in
#: folk melodies (eighths, then quarters, then sixteenths; set by hand, chosen by measuring).
RATIOS = np.array([1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1, 3 / 2, 2, 3, 4])
WEIGHTS = np.array([0.10, 0.04, 0.45, 0.03, 0.06, 0.20, 0.05, 0.04, 0.02, 0.01])
#: What an interval that no note value explains still scores (a tuplet, a fermata).
FLOOR = 0.02
#: Tolerance of a played interval against a note value, in octaves (0.06: about 4%).
SIGMA = 0.06
#: Width of the prior around the configured tempo, in octaves: wide, a tie-break.
PRIOR_OCTAVES = 2.0
MIN_IOI_S = 0.07
MAX_IOI_S = 3.0
MIN_IOIS = 3


def intervals(onsets: Sequence[float]) -> list[float]:
    """The usable inter-onset intervals (seconds) of onsets in time order."""
    return [b - a for a, b in zip(onsets, onsets[1:], strict=False)
            if MIN_IOI_S <= b - a <= MAX_IOI_S]


def estimate_beat(onsets: Sequence[float], lo_bpm: float, hi_bpm: float,
                  prior_bpm: float) -> float | None:
    """The beat period in seconds that best explains the onsets (seconds), or None when the
    call has too few usable intervals. Within ``lo_bpm..hi_bpm`` (the prior's centre is
    clamped into it)."""
    x = np.array(intervals(onsets))
    if len(x) < MIN_IOIS:
        return None
    lo_s, hi_s = 60.0 / hi_bpm, 60.0 / lo_bpm
    n = max(2, int(math.log(hi_s / lo_s) / math.log(1.005)) + 1)
    b = lo_s * (hi_s / lo_s) ** (np.arange(n) / (n - 1))  # candidate periods
    # err[c, i, q]: octaves between interval i and note value q at candidate period c
    err = np.log2(x[None, :, None] / (b[:, None, None] * RATIOS[None, None, :]))
    fit = WEIGHTS * np.exp(-0.5 * (err / SIGMA) ** 2)
    centre = 60.0 / min(max(prior_bpm, lo_bpm), hi_bpm)
    log_prior = -0.5 * (np.log2(b / centre) / PRIOR_OCTAVES) ** 2
    score = np.log(fit.max(axis=2) + FLOOR).mean(axis=1) + log_prior
    c = int(np.argmax(score))
    # refine: least squares of x ~ b * q over the note values the best period assigned
    q = RATIOS[np.argmax(fit[c], axis=1)]
    refined = float(np.dot(x, q) / np.dot(q, q))
    return min(max(refined, lo_s), hi_s)


class Pace:
    """The performer's recent median inter-onset interval, and the phrase-end wait it gives:
    ``multiple`` times it, within ``min_s..max_s``, so that a ballad is not interrupted and a
    reel is answered promptly. Only intervals within a call count (not the pause between)."""

    def __init__(self, multiple: float, min_s: float, max_s: float, notes: int = 16):
        self.multiple = multiple
        self.min_s = min_s
        self.max_s = max_s
        self.iois: deque[float] = deque(maxlen=notes)
        self._wait: float | None = None

    def add(self, ioi: float) -> None:
        if MIN_IOI_S <= ioi <= MAX_IOI_S:
            self.iois.append(ioi)
            self._wait = min(max(self.multiple * float(np.median(self.iois)), self.min_s),
                             self.max_s)

    def wait_s(self, default: float) -> float:
        """The phrase-end wait; ``default`` (clamped) until two intervals have been heard."""
        if self._wait is None or len(self.iois) < 2:
            return min(max(default, self.min_s), self.max_s)
        return self._wait
