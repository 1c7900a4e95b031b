"""The turn when trading bars (``answer.start: bar``): on which bar line a call has ended,
decided a little before that bar line, so that the answer starts on it with no added wait.

The call's bar lines are those of the grid followed (a MIDI clock's, a Link session's, else
the call's own from its first onset, taken as a downbeat), bars of ``time.meter`` beats
(Link: its quantum; unknown: ``DEFAULT_BAR_BEATS``). A bar is in sight when an external time
leads, or when the call's onsets lie on its beat grid (``on_grid``; a call of too few
onsets to tell, when the previous call was traded on bars); otherwise the playing is free
and the phrase end waits for a silence as with ``answer.start: beat``.

The candidate end is the first bar line at least ``LAST_ONSET_BEATS`` after the call's last
onset (a note later than that leads into the next bar). ``DECIDE_AHEAD_S`` before it, the
call has ended there (``Turn.ended``) when nothing has started since and

- it filled as many bars as the performer's previous call (the turn's length holds), or
- it is no shorter than that and a trading length (1, 2, 4, 8 bars), and its end sounds
  like one: its last note is long (sounding ``LONG_NOTE_BEATS`` or to the bar line) or on a
  stable degree of the key (a rest alone is no end: phrases rest inside too);

else the next bar line is the candidate, and a call silent for that whole bar has ended
(its length the bars to the line before: the answer comes a bar late, as long as the call).
A note before the bar line, or less than ``RESUME_BEATS`` after it, continues the call:
the answer stops (unheard, or after its first note) and its length does not count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Beats to a bar where nothing says otherwise (no time.meter, no Link session).
DEFAULT_BAR_BEATS = 4
#: The lengths, in bars, that performers trade.
TRADING_BARS = (1, 2, 4, 8)
#: The decision comes this long before the bar line: time to sample the answer's first notes.
DECIDE_AHEAD_S = 0.03
#: A note starting less than this many beats before a bar line leads into the next bar.
LAST_ONSET_BEATS = 0.25
#: A last note sounding this many beats (or to the bar line) ends a phrase like a cadence.
LONG_NOTE_BEATS = 1.0
#: A note less than this many beats after the bar line an answer started on continues the
#: call it answered: the answer stops and the call goes on (as a note before it does).
RESUME_BEATS = 0.5
#: Onsets within this many beats of a grid point are on it, or within ``GRID_TOL_S``
#: (human timing is a larger share of a fast beat).
GRID_TOL_BEATS = 0.07
GRID_TOL_S = 0.025
#: The share of a call's onsets on one grid (sixteenths, or eighth-note triplets) for its
#: bars to be in sight.
GRID_SHARE = 0.85
#: Onsets a call needs before its beat grid can be judged.
GRID_ONSETS = 3


def grid_shift(beats: Sequence[float], tol_beats: float = GRID_TOL_BEATS) -> float | None:
    """Where onsets (in beats from the call's first) put the beat grid: None when they lie on
    none; else how many beats the grid lies after the first onset (their median offset
    from it, the first onset's own timing), at least ``GRID_SHARE`` of them within
    ``tol_beats`` of its sixteenths, or of its triplet eighths, once moved by it."""
    if len(beats) < GRID_ONSETS:
        return None
    for division in (4, 3):
        off = sorted(b - round(b * division) / division for b in beats)
        shift = off[len(off) // 2]
        near = sum(1 for b in beats
                   if abs(b - shift - round((b - shift) * division) / division) <= tol_beats)
        if near >= GRID_SHARE * len(beats):
            return shift
    return None


def on_grid(beats: Sequence[float], tol_beats: float = GRID_TOL_BEATS) -> bool:
    """Whether onsets (in beats from the call's first) lie on one beat grid (``grid_shift``)."""
    return grid_shift(beats, tol_beats) is not None


@dataclass(frozen=True)
class BarPlan:
    """Where a call may end: its bar line ``line`` (seconds), the call's length to it in
    ``bars`` of ``bar_beats`` beats, and when to decide (``decide``, seconds)."""

    line: float
    bars: int
    bar_beats: float
    decide: float


def plan(last_onset: float, last_bars: float, first_bars: float, bar_beats: float,
         beat_s: float, after: float | None = None) -> BarPlan:
    """The candidate end of a call whose last onset ``last_onset`` (seconds) lies
    ``last_bars`` bars into the grid (bars of ``bar_beats`` beats of ``beat_s``) and whose
    first lay ``first_bars`` in (a start in a bar's second half is a pickup to the next bar
    line): the first bar line at least ``LAST_ONSET_BEATS`` after the last onset, and after
    ``after``, a bar line judged not the end."""
    bar_s = bar_beats * beat_s
    ref = last_onset + (LAST_ONSET_BEATS - GRID_TOL_BEATS) * beat_s
    if after is not None:
        ref = max(ref, after + 0.5 * bar_s)
    at_ref = last_bars + (ref - last_onset) / bar_s
    k = math.ceil(at_ref - 1e-9)
    line = ref + (k - at_ref) * bar_s
    return BarPlan(line, max(1, k - round(first_bars)), bar_beats, line - DECIDE_AHEAD_S)


class Turn:
    """The performer's turns so far (their lengths in bars) and the rule that decides, at a
    candidate bar line, whether the call has ended there (module docstring)."""

    def __init__(self) -> None:
        self.last_bars: int | None = None  # the previous answered call's length in bars

    def ended(self, bars: int, long_end: bool, stable: bool, second_line: bool) -> bool:
        """The call of ``bars`` bars has ended at its candidate bar line: ``long_end``, its
        last note sounds long; ``stable``, on a stable degree; ``second_line``, a bar line
        before this one was judged not the end and nothing was played since."""
        if second_line:
            return True
        last = self.last_bars
        if last is not None:
            if bars == last:
                return True
            if bars < last:
                return False
        return bars in TRADING_BARS and (long_end or stable)

    def answered(self, bars: int) -> None:
        """A call of ``bars`` bars was answered."""
        self.last_bars = bars

    def withdrawn(self, previous: int | None) -> None:
        """The answer was withdrawn before it sounded (the call went on): its length does
        not count; ``previous`` is what the length was before."""
        self.last_bars = previous
