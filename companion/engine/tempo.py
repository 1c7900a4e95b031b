"""The performer's time without a clock: the beat from a call's inter-onset intervals, and
the performer's pace, which sets how long a silence ends a call.

Estimator (``tempo: auto``). A beat period ``b`` explains an inter-onset interval ``x`` when
``x / b`` is near one of the note values of ``RATIOS`` (a sixteenth to a whole note,
triplets and dotted values included), within ``SIGMA`` octaves and ``JITTER_S`` seconds
together (human timing: its few milliseconds are a larger share of a fast note). Each
candidate period between ``lo_bpm`` and ``hi_bpm`` (0.5% apart) reads the call two ways and
keeps the better:

- as a melody: the mean, over the call's intervals, of the log of ``FLOOR + max_q
  WEIGHTS[q] * fit``. The weights are how common each note value is in folk melodies, next
  to the eighth: the quarter nearly as common, the sixteenth a little less, the rest rare
  (the half note rarest). Onsets alone cannot tell eighths at 60 BPM from quarters at 120
  (the same sound): a call with quarters among its eighths and sixteenths is read with its
  quarters as quarters (not half notes), and one of eighths and quarters alone as it is;
- as a run: a call whose intervals are all one value is heard with that value as its beat
  (a listener taps along), scoring ``log(RUN_GAIN)`` plus the mean log of the intervals'
  fit to the beat (an interval that does not fit counts ``log(RUN_FLOOR)``: one longer note
  makes the call a melody again).

Each local maximum of that evidence over the periods is a reading of the call, its period
refined by least squares on the note values it assigned. The reading chosen is the one whose
evidence plus log prior is highest: a log-normal ``PRIOR_OCTAVES`` wide around the
configured tempo (only ties are left to it), times, once a call has been heard, the
performer's tempo held across calls: a log-normal ``HOLD_OCTAVES`` wide around the tempo of
the last call holding all but ``HOLD_CHANGE`` of the weight, the rest a change of tempo,
``CHANGE_OCTAVES`` wide (more likely small than large). So a call that alone is ambiguous
(a run of eighths) is read in the tempo held, a call that fits it poorly moves it, and
where a new tempo's octave is also a reading of the call, the one nearer the tempo held
wins. Intervals under ``MIN_IOI_S`` (ornaments, rolled chords) or over ``MAX_IOI_S``
(pauses) do not count; with fewer than ``MIN_IOIS`` left there is no estimate. Measured
over 60..180 BPM by ``python -m bench.tempo`` and ``python -m bench.defaults``
(docs/defaults.md).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

#: Note values, in beats, that a call's intervals are read as; and how common each is in
#: folk melodies, next to the eighth (set by hand, chosen by measuring calls as bench.tempo
#: does, from tunes of its sources apart from those it reports).
RATIOS = np.array([1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1, 3 / 2, 2, 3, 4])
WEIGHTS = np.array([0.65, 0.04, 1.0, 0.02, 0.1, 0.9, 0.1, 0.01, 0.05, 0.02])
#: What an interval that no note value explains still scores (a tuplet, a fermata).
FLOOR = 0.02
#: Tolerance of a played interval against a note value: in octaves (0.06: about 4%), and
#: in seconds (human timing), together as the root of their squares' sum.
SIGMA = 0.06
JITTER_S = 0.012
#: A run (a call of one note value) read with that value as the beat: its evidence is the
#: fit's mean log plus log(RUN_GAIN); an interval off the run counts log(RUN_FLOOR).
RUN_GAIN = 2.0
RUN_FLOOR = 1e-6
#: Width of the prior around the configured tempo, in octaves: wide, a tie-break.
PRIOR_OCTAVES = 6.0
#: The tempo held across calls: a log-normal HOLD_OCTAVES wide around the last call's,
#: holding all but HOLD_CHANGE of the weight; the rest, a change, CHANGE_OCTAVES wide.
HOLD_OCTAVES = 0.06
HOLD_CHANGE = 0.3
CHANGE_OCTAVES = 0.5
MIN_IOI_S = 0.07
MAX_IOI_S = 3.0
MIN_IOIS = 3
#: Candidate periods are this far apart (a ratio).
STEP = 1.005
_BEAT = int(np.flatnonzero(RATIOS == 1)[0])


def intervals(onsets: Sequence[float]) -> list[float]:
    """The usable inter-onset intervals (seconds) of onsets in time order."""
    return [b - a for a, b in zip(onsets, onsets[1:], strict=False)
            if MIN_IOI_S <= b - a <= MAX_IOI_S]


def readings(onsets: Sequence[float], lo_bpm: float,
             hi_bpm: float) -> list[tuple[float, float]]:
    """The call's readings: (beat period in seconds, evidence) at each local maximum of the
    evidence over the periods of ``lo_bpm..hi_bpm``, the period refined by least squares on
    the note values the reading assigned to the intervals it explains (a fit above
    ``FLOOR``: the others, a note and a rest say, do not pull it), within the range. Empty
    when the call has too few usable intervals."""
    x = np.array(intervals(onsets))
    if len(x) < MIN_IOIS:
        return []
    lo_s, hi_s = 60.0 / hi_bpm, 60.0 / lo_bpm
    n = max(3, int(math.log(hi_s / lo_s) / math.log(STEP)) + 1)
    b = lo_s * (hi_s / lo_s) ** (np.arange(n) / (n - 1))  # candidate periods
    # fit[c, i, q]: how well interval i is note value q at candidate period c
    bq = b[:, None, None] * RATIOS[None, None, :]
    tol = np.sqrt(SIGMA ** 2 + (JITTER_S / (bq * math.log(2))) ** 2)
    fit = np.exp(-0.5 * (np.log2(x[None, :, None] / bq) / tol) ** 2)
    weighted = fit * WEIGHTS
    melody = np.log(weighted.max(axis=2) + FLOOR).mean(axis=1)
    run = np.log(fit[:, :, _BEAT] + RUN_FLOOR).mean(axis=1) + math.log(RUN_GAIN)
    e = np.maximum(melody, run)  # the evidence
    is_run = run > melody
    # local maxima (a plateau's first period)
    peaks = np.flatnonzero(np.r_[e[0] >= e[1], (e[1:-1] > e[:-2]) & (e[1:-1] >= e[2:]),
                                 e[-1] > e[-2]])
    out = []
    for c in peaks:
        f = fit[c] if is_run[c] else weighted[c]
        k = np.argmax(f, axis=1)
        heard = f[np.arange(len(x)), k] > FLOOR  # the intervals the reading explains
        q, xs = RATIOS[k][heard], x[heard]
        refined = float(np.dot(xs, q) / np.dot(q, q)) if len(q) else float(b[c])
        out.append((min(max(refined, lo_s), hi_s), float(e[c])))
    return out


def log_prior(beat_s: float, prior_bpm: float, held_s: float | None) -> float:
    """The log prior of a beat period: a log-normal around ``prior_bpm``; with a tempo held
    from the calls before (``held_s``), times a mixture around it: the tempo held
    (``HOLD_OCTAVES`` wide) or, ``HOLD_CHANGE`` of the weight, a change (``CHANGE_OCTAVES``
    wide)."""
    base = -0.5 * (math.log2(beat_s * prior_bpm / 60.0) / PRIOR_OCTAVES) ** 2
    if held_s is None:
        return base
    d = math.log2(beat_s / held_s)
    return base + float(np.logaddexp(
        math.log(1 - HOLD_CHANGE) - 0.5 * (d / HOLD_OCTAVES) ** 2,
        math.log(HOLD_CHANGE) - 0.5 * (d / CHANGE_OCTAVES) ** 2))


def estimate_beat(onsets: Sequence[float], lo_bpm: float, hi_bpm: float,
                  prior_bpm: float, held_s: float | None = None) -> float | None:
    """The beat period in seconds that best explains the onsets (seconds), or None when the
    call has too few usable intervals: the reading (``readings``) whose evidence and log
    prior (``log_prior``: around ``prior_bpm``, and the tempo ``held_s`` of the calls before)
    sum highest. Within ``lo_bpm..hi_bpm``."""
    best: tuple[float, float] | None = None
    for beat, evidence in readings(onsets, lo_bpm, hi_bpm):
        score = evidence + log_prior(beat, prior_bpm, held_s)
        if best is None or score > best[0]:
            best = (score, beat)
    return None if best is None else best[1]


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
