"""Following a MIDI clock: 0xF8 ticks (24 per quarter note), Start, Stop, Continue and Song
Position, into a tempo and a beat grid on the companion's own clock.

Ticks arrive with jitter (the sender's, the MIDI system's, the input thread's): the tempo
and the grid are a least-squares line through the last ``window`` tick times, not the last
interval, so a tick a few milliseconds late moves them by a fraction of that; a gap of
several tick periods counts the ticks lost in it, so the grid does not slip (and ticks
that then arrive in a burst were only late: they are not counted twice). Beats are the
ticks whose song position is a multiple of 24: Start makes the next tick position 0,
Song Position Pointer (in sixteenths) and Continue carry on from a position. A clock that
only ticks (no Start ever) counts its first tick as a beat. After Stop the ticks still give
the tempo, but there is no grid until Continue or Start. Without a tick for ``LOST_S``
there is no clock: the companion falls back to its internal tempo. Ticks are a tempo
only between ``MIN_BPM`` and ``MAX_BPM``.
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
#: The messages a clock follower takes.
CLOCK_TYPES = frozenset({"clock", "start", "stop", "continue", "songpos"})


def _fit(ticks) -> tuple[float, float, float] | None:
    """(mean index, mean time, seconds per tick) of a least-squares line, None if flat."""
    k = len(ticks)
    nm = sum(n for n, _ in ticks) / k
    tm = sum(t for _, t in ticks) / k
    sxx = sum((n - nm) ** 2 for n, _ in ticks)
    sxy = sum((n - nm) * (t - tm) for n, t in ticks)
    return (nm, tm, sxy / sxx) if sxx > 0 and sxy > 0 else None


class ClockFollower:
    """Feed it clock messages with their receive times; ask for ``beat_s`` and ``next_beat``.

    Thread-safe: the live companion feeds it from the MIDI input thread (ticks are stamped
    and taken there, never queued behind notes) and asks from the engine and click threads.
    """

    def __init__(self, window: int = 48):
        self.ticks: deque[tuple[int, float]] = deque(maxlen=max(2, window))
        self.playing = True  # a clock that never sends Start is taken as running
        self.last_tick = -math.inf
        self._n = 0  # index of the next tick (all ticks, playing or not)
        self._origin = (0, 0)  # (tick index, song position) the grid counts from
        self._stopped_pos = 0  # song position at which Continue resumes
        self._fit: tuple[float, float, float] | None = None  # (n mean, t mean, s per tick)
        self._lock = threading.RLock()
        self.lost = 0  # ticks inferred lost from the gaps between those that came
        self._credit = 0  # ticks of the last gap counted as lost, that may come late yet

    def feed(self, msg, t: float) -> bool:
        """One message at ``t``; False if it is not a clock message."""
        with self._lock:
            return self._feed(msg.type, msg, t)

    def _feed(self, kind: str, msg, t: float) -> bool:
        if kind == "clock":
            if t - self.last_tick > LOST_S:
                self.ticks.clear()  # a clock that went and came back: a fresh line
                self._credit = 0
            elif self._line() is not None:
                # A gap of k tick periods: k - 1 ticks lost on the way (a MIDI system that
                # skipped a cycle), counted, or the grid would slip. Unless they come right
                # after in a burst (held up, not lost): those only pay the credit back.
                per = self._fit[2]
                dt = t - self.last_tick
                if self._credit and dt < 0.5 * per:
                    self._credit -= 1
                    self.lost -= 1
                    self.last_tick = t
                    return True
                self._credit = 0
                gap = round(dt / per)
                if gap > 1:
                    self._n += gap - 1
                    self.lost += gap - 1
                    self._credit = gap - 1
            self.ticks.append((self._n, t))
            self._n += 1
            self.last_tick = t
            self._fit = None
        elif kind == "start":
            self.playing = True
            self._origin = (self._n, 0)
        elif kind == "continue":
            self.playing = True
            self._origin = (self._n, self._stopped_pos)
        elif kind == "stop":
            if self.playing:
                self._stopped_pos = self._position(self._n)
            self.playing = False
        elif kind == "songpos":
            pos = int(msg.pos) * 6  # sixteenths to ticks
            self._stopped_pos = pos
            if self.playing:
                self._origin = (self._n, pos)
        else:
            return False
        return True

    def _position(self, n: float) -> float:
        return self._origin[1] + n - self._origin[0]

    def _line(self) -> tuple[float, float, float] | None:
        """Least squares through the window, then again without the ticks that came late by
        more than ``LATE_MADS`` median deviations (a delivery held up by a busy system)."""
        if self._fit is None and len(self.ticks) >= 2:
            fit = _fit(self.ticks)
            if fit is not None and len(self.ticks) >= 8:
                nm, tm, per = fit
                res = [t - tm - (n - nm) * per for n, t in self.ticks]
                mad = sorted(abs(r) for r in res)[len(res) // 2]
                kept = [nt for nt, r in zip(self.ticks, res, strict=True)
                        if r <= LATE_MADS * mad + 1e-4]
                if len(kept) >= len(res) // 2:
                    fit = _fit(kept) or fit
            if fit is not None and not 60.0 / MAX_BPM <= TICKS_PER_BEAT * fit[2] <= 60.0 / MIN_BPM:
                fit = None  # looked for again at the next tick (or question)
            self._fit = fit
        return self._fit

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
