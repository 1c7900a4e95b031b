"""Following a MIDI clock: 0xF8 ticks (24 per quarter note), Start, Stop, Continue and Song
Position, into a tempo and a beat grid on the companion's own clock.

Ticks arrive with jitter (the sender's, the MIDI system's, the input thread's): the tempo
and the grid are a least-squares line through the last ``window`` tick times, not the last
interval, so a tick a few milliseconds late moves them by a fraction of that.

A clock is a count: every tick that comes is counted, and none is inferred. From stamps
alone a receiver cannot tell a tick lost on the way from a clock that came later, and the
second is what JACK does when its graph stalls (an xrun): all the clock's ticks come, those
after the stall periods later on our clock than before it. So a tick later than the band in
which the window's stamps scatter opens a gap, and once the ticks after it lie flat, the
clock has moved: the ticks before the gap move with it, so that the line keeps their tempo
at the new phase. A smaller step, inside the band (a short stall), is found from the mean
of the last ticks against the line before them: left in the line, a step of a few
milliseconds would tilt the tempo by tenths of a BPM. Ticks held up and then delivered in
a burst settle back on the line and move nothing.

Beats are the ticks whose song position is a multiple of 24: Start makes the next tick
position 0, Song Position Pointer (in sixteenths) and Continue carry on from a position. A
clock that only ticks (no Start ever) counts its first tick as a beat. After Stop the ticks
still give the tempo, but there is no grid until Continue or Start. Without a tick for
``LOST_S`` there is no clock: the companion falls back to its internal tempo. Ticks are a
tempo only between ``MIN_BPM`` and ``MAX_BPM``.
"""

from __future__ import annotations

import math
import threading
from collections import deque

TICKS_PER_BEAT = 24
#: No tick for this long: the clock has gone (the slowest allowed tempo, 20 BPM, ticks
#: every 0.125 s).
LOST_S = 0.5
#: The tempi a clock is believed at (config's range for tempi): ticks further apart than
#: 20 BPM's, or closer than 400 BPM's, are strays or a broken clock, not a tempo.
MIN_BPM, MAX_BPM = 20.0, 400.0
#: A tick later than the line by this many median absolute deviations is left out of it.
LATE_MADS = 3.0
#: Gaps are looked for only in a window of this many ticks (the band of scatter is known)
MIN_TICKS_FOR_GAP = 24
#: A tick later than the band's edge by this fraction of a period opens a gap ...
GAP_FRAC = 0.15
#: ... judged once this many ticks after it lie flat (their lateness within ``FLAT_BAND``
#: times the band's width and ``FLAT_S``): the clock moved by their mean lateness, if that
#: is significant (below); a gap whose ticks do not settle within ``GAP_WAIT_TICKS`` is
#: let go. Fewer do, down to ``JUDGE_TICKS_MIN``, where the band is narrow enough that their
#: mean is known within ``JUDGE_SE_S`` (stamps spread evenly over the band): what is still to
#: play moves with the clock that much sooner after a stall.
JUDGE_TICKS = 6
JUDGE_TICKS_MIN = 2
JUDGE_SE_S = 0.0025
#: A judged move is then refined: each tick after those it was judged from that lies flat
#: with them joins their mean, until this many (a beat); what is still to play moves by
#: each change. Two ticks' mean is known within 2.5 ms, a beat's within a few tenths.
REFINE_TICKS = 24
FLAT_BAND = 1.25
FLAT_S = 0.0005
GAP_WAIT_TICKS = 24
#: A smaller step, inside the band (a short stall), is found from the mean of the last
#: ``STEP_TICKS`` ticks against the line through those before them: later than that mean
#: scatters by ``STEP_SIGMAS`` standard deviations (stamps spread evenly over the band) and
#: by ``STEP_MIN_S``. Left in the line, a step of a few milliseconds tilts its slope by
#: tenths of a BPM.
STEP_TICKS = 24
STEP_SIGMAS = 4.0
STEP_MIN_S = 0.001
#: The tempo comes from up to this many windows of ticks, the longest run of them whose
#: slope agrees with the last window's (within ``AGREE_SE`` standard errors of it): stamps
#: quantised to 21 ms cycles scatter too widely for 48 ticks to give the tempo to 0.3 BPM.
LONG_WINDOWS = 4
AGREE_SE = 3.0
#: The messages a clock follower takes.
CLOCK_TYPES = frozenset({"clock", "start", "stop", "continue", "songpos"})

Line = tuple[float, float, float]  # (mean index, mean time, seconds per tick)
#: a gap in the ticks: (index of its first tick, the line before it, its band's middle and
#: width)
Gap = tuple[int, Line, float, float]


def _fit(ticks) -> Line | None:
    """(mean index, mean time, seconds per tick) of a least-squares line, None if flat."""
    k = len(ticks)
    nm = sum(n for n, _ in ticks) / k
    tm = sum(t for _, t in ticks) / k
    sxx = sum((n - nm) ** 2 for n, _ in ticks)
    sxy = sum((n - nm) * (t - tm) for n, t in ticks)
    return (nm, tm, sxy / sxx) if sxx > 0 and sxy > 0 else None


def _slope_error(ticks, fit: Line) -> float:
    """The standard error of a least-squares line's slope."""
    nm, tm, per = fit
    sxx = sum((n - nm) ** 2 for n, _ in ticks)
    sse = sum((t - tm - (n - nm) * per) ** 2 for n, t in ticks)
    return math.sqrt(sse / max(1, len(ticks) - 2) / sxx)


def _lateness(gap: Gap, n: int, t: float) -> float:
    """How much later than the line before ``gap`` (from its band's middle) tick ``n`` came."""
    _, (nm, tm, per), mid, _ = gap
    return t - tm - (n - nm) * per - mid


def _flat(late: list[float], width: float) -> bool:
    """Whether ticks this late lie flat: within ``FLAT_BAND`` bands of ``width``."""
    return max(late) - min(late) <= FLAT_BAND * width + FLAT_S


class ClockFollower:
    """Feed it clock messages with their receive times; ask for ``beat_s`` and ``next_beat``.

    Thread-safe: the live companion feeds it from the MIDI input thread (ticks are stamped
    and taken there, never queued behind notes) and asks from the engine and click threads.
    """

    def __init__(self, window: int = 48):
        self.window = max(2, window)
        # the window's ticks are the last of these: the tempo may come from more of them
        self.ticks: deque[tuple[int, float]] = deque(maxlen=LONG_WINDOWS * self.window)
        self.playing = True  # a clock that never sends Start is taken as running
        self.last_tick = -math.inf
        self._n = 0  # index of the next tick (all ticks, playing or not)
        self._origin = (0, 0)  # (tick index, song position) the grid counts from
        self._counted = False  # the song position is from a Start, Continue or Song Position
        self._stopped_pos = 0  # song position at which Continue resumes
        self._fit: Line | None = None
        self._lock = threading.RLock()
        self._band = (0.0, 0.0)  # (lowest, highest) residual of the window's stamps
        self._gap: Gap | None = None  # the open gap
        self._moved = 0.0  # seconds the clock has moved by, all judged gaps together
        #: the last judged move while it is refined: (its gap, and the lateness of the
        #: ticks it is the mean of)
        self._refining: tuple[Gap, list[float]] | None = None

    def feed(self, msg, t: float) -> bool:
        """One message at ``t``; False if it is not a clock message."""
        with self._lock:
            return self._feed(msg.type, msg, t)

    def _feed(self, kind: str, msg, t: float) -> bool:
        if kind == "clock":
            if t - self.last_tick > LOST_S:
                self.ticks.clear()  # a clock that went and came back: a fresh line
                self._gap = self._refining = None
            elif self._gap is None:
                self._open_gap(t)
            self.ticks.append((self._n, t))
            self._n += 1
            self.last_tick = t
            self._fit = None
            if self._gap is None:
                self._find_step()
            if self._gap is not None:
                self._refining = None  # a new gap: the last move stands
                self._judge_gap()
            elif self._refining is not None:
                self._refine()
        elif kind == "start":
            self.playing = True
            self._origin = (self._n, 0)
            self._counted = True
        elif kind == "continue":
            self.playing = True
            self._origin = (self._n, self._stopped_pos)
            self._counted = True
        elif kind == "stop":
            if self.playing:
                self._stopped_pos = self._position(self._n)
            self.playing = False
        elif kind == "songpos":
            pos = int(msg.pos) * 6  # sixteenths to ticks
            self._stopped_pos = pos
            self._counted = True
            if self.playing:
                self._origin = (self._n, pos)
        else:
            return False
        return True

    def _position(self, n: float) -> float:
        return self._origin[1] + n - self._origin[0]

    def _open_gap(self, t: float) -> None:
        """A gap opens at a tick that comes later than the band in which the window's stamps
        scatter about the line (``GAP_FRAC`` of a period past its edge)."""
        line = self._line()
        if line is None or len(self.ticks) < MIN_TICKS_FOR_GAP:
            return
        nm, tm, per = line
        lo, hi = self._band
        mid = (lo + hi) / 2
        if t - tm - (self._n - nm) * per - mid > (hi - lo) / 2 + GAP_FRAC * per:
            self._gap = (self._n, line, mid, hi - lo)

    def _significant(self, shift: float, width: float, k: int) -> bool:
        """Whether the mean lateness of ``k`` ticks is more than stamps spread evenly over a
        band of ``width`` would give by chance (see STEP_SIGMAS, STEP_MIN_S)."""
        return abs(shift) > max(STEP_MIN_S, STEP_SIGMAS * width / math.sqrt(12 * k))

    def _find_step(self) -> None:
        """Opens a gap at the first of the last ``STEP_TICKS`` ticks where their mean lies
        later than the line through the window before them (at the tempo of all the ticks
        before them) by a significant amount."""
        if len(self.ticks) < 2 * self.window + STEP_TICKS:
            return  # the tempo is known from two windows at least: a line long enough
        ticks = list(self.ticks)
        if (long := _fit(ticks[:-STEP_TICKS])) is None:
            return
        before = ticks[-STEP_TICKS - self.window:-STEP_TICKS]
        per = long[2]  # the tempo of all the ticks before the tail; the phase of the last window
        nm = sum(n for n, _ in before) / len(before)
        tm = sum(t for _, t in before) / len(before)
        fit = (nm, tm, per)
        res = [t - tm - (n - nm) * per for n, t in before]
        lo, hi = min(res), max(res)
        mid = (lo + hi) / 2
        recent = ticks[-STEP_TICKS:]
        r = [t - tm - (n - nm) * per - mid for n, t in recent]
        # where a later clock would begin: the tail whose sum is likeliest a shift; one
        # shorter than JUDGE_TICKS is waited for (a tail longer than the shift would be
        # a diluted one)
        tails = [0.0] * (STEP_TICKS + 1)  # tails[k]: sum(r[k:])
        for j in range(STEP_TICKS - 1, -1, -1):
            tails[j] = tails[j + 1] + r[j]
        k = max(range(STEP_TICKS - 1),
                key=lambda k: tails[k] ** 2 / (STEP_TICKS - k) if tails[k] > 0 else 0.0)
        m = STEP_TICKS - k
        if m < JUDGE_TICKS:
            return
        late = tails[k] / m
        # stamps quantised to cycles scatter in a pattern, not at random: the tail must also
        # lie later than any run of as many ticks did before it
        sums = [0.0]
        for x in res:
            sums.append(sums[-1] + x - mid)
        usual = max((sums[j + m] - sums[j]) / m for j in range(len(res) - m + 1))
        if late > usual + STEP_MIN_S and self._significant(late, hi - lo, m):
            self._gap = (recent[k][0], fit, mid, hi - lo)

    def _judge_gap(self) -> None:
        """Once the ticks since the gap (else the last of them, as many as the band needs) lie flat
        against the line before it, the clock moved by their mean lateness (unless that is
        not significant: they were only held up): the ticks before the gap move by as much.
        The gap's ticks off the line that follows (held up) are left out of it; all stay
        counted."""
        gap = self._gap
        first, _, _, width = gap
        after = [(n, t) for n, t in self.ticks if n >= first]
        if len(after) > GAP_WAIT_TICKS:
            self._gap = None
            return
        need = min(JUDGE_TICKS, max(JUDGE_TICKS_MIN, math.ceil((width / JUDGE_SE_S) ** 2 / 12)))
        if len(after) < need:
            return
        late = [_lateness(gap, n, t) for n, t in after]
        if not _flat(late, width):  # not all of them: the last ones, once they have settled
            late = late[-need:]
            if not _flat(late, width):
                return
        self._gap = None
        shift = self._mean_move(late, width)
        self._move(first, shift)
        off = width / 2 + FLAT_S
        self.ticks = deque(
            (nt for nt in self.ticks
             if nt[0] < first or abs(_lateness(gap, *nt) - shift) <= off),
            maxlen=self.ticks.maxlen)
        self._refining = (gap, late) if len(late) < REFINE_TICKS else None

    def _mean_move(self, late: list[float], width: float) -> float:
        """The move that ticks this late show: their mean, if significant, else none."""
        shift = sum(late) / len(late)
        return shift if self._significant(shift, width, len(late)) else 0.0

    def _move(self, first: int, shift: float) -> None:
        """The ticks before ``first`` move by ``shift``, and the clock's move with them."""
        self._fit = None
        self._moved += shift
        self.ticks = deque(((n, t + shift) if n < first else (n, t) for n, t in self.ticks),
                           maxlen=self.ticks.maxlen)

    def _refine(self) -> None:
        """The last tick joins the mean of the judged move while it lies flat with the
        ticks it came from (else the move stands as it is): the move becomes their mean."""
        gap, late = self._refining
        first, _, _, width = gap
        was = self._mean_move(late, width)
        late = [*late, _lateness(gap, *self.ticks[-1])]
        if not _flat(late, width):
            self._refining = None
            return
        self._move(first, self._mean_move(late, width) - was)
        self._refining = (gap, late) if len(late) < REFINE_TICKS else None

    def _usable(self) -> list[tuple[int, float]]:
        """The ticks a line goes through: before the open gap, if any."""
        if self._gap is None:
            return list(self.ticks)
        return [nt for nt in self.ticks if nt[0] < self._gap[0]]

    def _line(self) -> Line | None:
        """Least squares through the window, then again without the ticks that came late by
        more than ``LATE_MADS`` median deviations (a delivery held up by a busy system).
        Stamps quantised to the MIDI system's cycles scatter evenly about this line. Its
        slope is then that of the longest run of windows (``LONG_WINDOWS``) that agrees.
        While a gap is open, the line is the one through the ticks before it."""
        if self._fit is None and len(self.ticks) >= 2:
            window = self._usable()[-self.window:]
            fit = _fit(window)
            kept = window
            if fit is not None and len(window) >= 8:
                nm, tm, per = fit
                res = [t - tm - (n - nm) * per for n, t in window]
                mad = sorted(abs(r) for r in res)[len(res) // 2]
                kept = [nt for nt, r in zip(window, res, strict=True)
                        if r <= LATE_MADS * mad + 1e-4]
                if len(kept) >= len(res) // 2:
                    fit = _fit(kept) or fit
                else:
                    kept = window
                if fit is not None and len(self.ticks) >= 2 * self.window:
                    fit = self._longer(fit, kept)
            if fit is not None and not 60.0 / MAX_BPM <= TICKS_PER_BEAT * fit[2] <= 60.0 / MIN_BPM:
                fit = None  # looked for again at the next tick (or question)
            if fit is not None:
                nm, tm, per = fit
                res = [t - tm - (n - nm) * per for n, t in kept]
                self._band = (min(res), max(res))
            self._fit = fit
        return self._fit

    def _longer(self, fit: Line, kept) -> Line:
        """``fit`` (the window's line) with the slope of the longest run of whole windows
        that agrees with it; the line still passes through the window's mean."""
        nm, tm, per = fit
        limit = AGREE_SE * _slope_error(kept, fit) + 1e-9
        ticks = self._usable()
        best = per
        k = 2
        while k * self.window <= len(ticks):
            longer = _fit(ticks[-k * self.window:])
            if longer is None or abs(longer[2] - per) > limit:
                break
            best = longer[2]
            k *= 2
        return nm, tm, best

    def present(self, t: float) -> bool:
        """Ticks are arriving (at least two, the last within ``LOST_S`` of ``t``)."""
        with self._lock:
            return t - self.last_tick <= LOST_S and self._line() is not None

    def running(self, t: float) -> bool:
        """Ticks are arriving and the transport plays: there is a beat grid."""
        return self.playing and self.present(t)

    def beat_s(self, t: float) -> float | None:
        """Seconds per quarter note, smoothed; None without a clock."""
        with self._lock:
            if not self.present(t):
                return None
            return TICKS_PER_BEAT * self._fit[2]

    def bpm(self, t: float) -> float | None:
        b = self.beat_s(t)
        return None if b is None else 60.0 / b

    def next_beat(self, t: float) -> float | None:
        """The time of the first clock beat at or after ``t``; None without a running clock."""
        with self._lock:
            if not self.running(t):
                return None
            nm, tm, per = self._fit
            pos = self._position(nm + (t - tm) / per)
            beat_pos = math.ceil(pos / TICKS_PER_BEAT - 1e-9) * TICKS_PER_BEAT
            return tm + (beat_pos - self._position(nm)) * per

    def beats_at(self, t: float) -> float | None:
        """The song position at ``t`` in quarter notes (a whole number on each clock beat), on
        the line through the ticks; None without a running clock."""
        with self._lock:
            if not self.running(t):
                return None
            nm, tm, per = self._fit
            return self._position(nm + (t - tm) / per) / TICKS_PER_BEAT

    @property
    def heard(self) -> int:
        """How many ticks came (playing or not)."""
        with self._lock:
            return self._n

    @property
    def moved(self) -> float:
        """Seconds the clock has moved by since it was first heard (all the gaps judged): a
        time placed on its grid before keeps its beat if it moves by the change in this."""
        with self._lock:
            return self._moved

    def counted(self) -> bool:
        """Whether the song position counts from the song's start (a Start, Continue or Song
        Position message came), so that a bar can be counted from it; a clock that only
        ticks counts from its first tick, which is no downbeat."""
        with self._lock:
            return self._counted
