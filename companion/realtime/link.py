"""Following an Ableton Link session (``time.clock: link`` or ``auto``), through the
``aalink`` binding of Ableton's Link library (the optional extra ``link``).

The follower has the shape of the MIDI clock's (companion.engine.midiclock.ClockFollower):
the engine asks it for the beat length and the next beat or bar on the live clock, so the
engine has one notion of external time. Link counts beats on its own clock; a reading of
the session's beat is bracketed by two readings of the live clock (``time.perf_counter``),
and the narrowest of a few brackets places that beat on the live clock to a few
microseconds. Beats on the live clock then follow from the session's tempo, read at each
question: a tempo changed by any peer is followed from the next question on.

Rules kept:
- The session is followed while it has peers; alone, the companion keeps its own tempo.
- Bars are the session's: a beat whose number is a multiple of the quantum (Link keeps the
  phase of the quantum the same for every peer that uses the same quantum).
- Start/stop sync is on. It is honoured once a peer has started the session's transport
  (a session where nobody uses it reads as stopped from the start): while stopped after
  that, there is no grid to answer on.
- The session's tempo changes only by ``propose`` (``time.link_lead``), never otherwise.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from companion.config import ConfigError, TimeConfig

#: Readings of the session's beat taken for one answer: the narrowest bracket wins.
READINGS = 3
#: Link's tempo range (Ableton's own: 20..999 BPM).
MIN_BPM, MAX_BPM = 20.0, 999.0


def binding() -> Any:
    """The aalink module; ConfigError naming the key and the extra when it is missing."""
    try:
        import aalink
    except ImportError as e:
        from companion.extras import install_hint

        raise ConfigError(f"time.clock: Ableton Link needs the aalink binding, the `link` "
                          f"extra: {install_hint('link')} ({e})") from e
    return aalink


def beat_now(link: Any, now: Callable[[], float] = time.perf_counter,
             readings: int = READINGS) -> tuple[float, float]:
    """(time on ``now``'s clock, the session's beat then) of an aalink ``Link``: the beat read
    between two readings of ``now``, the narrowest bracket of ``readings``."""
    best = (math.inf, 0.0, 0.0)
    for _ in range(readings):
        t0 = now()
        beat = link.beat
        t1 = now()
        if t1 - t0 < best[0]:
            best = (t1 - t0, (t0 + t1) / 2, beat)
    return best[1], best[2]


class LinkFollower:
    """A peer of the Link session on this machine's network, asked from any thread.

    ``now`` is the live clock (seconds); every time it gives or takes is on that clock."""

    def __init__(self, bpm: float, quantum: float,
                 now: Callable[[], float] = time.perf_counter) -> None:
        aalink = binding()
        self.quantum = float(quantum)
        self.now = now
        # aalink wants an asyncio loop to hand sync() results to; this follower never
        # awaits sync(), so the loop need not run, only exist while the session is open
        self._loop = asyncio.new_event_loop()

        async def join() -> Any:
            return aalink.Link(min(max(bpm, MIN_BPM), MAX_BPM))

        self._link = self._loop.run_until_complete(join())
        self._link.quantum = self.quantum
        self._link.start_stop_sync_enabled = True
        self._link.enabled = True
        self._lock = threading.Lock()
        self._transport_used = False  # a peer has started the transport at least once

    def close(self) -> None:
        """Leave the session. Idempotent."""
        with self._lock:
            link, self._link = self._link, None
        if link is not None:
            link.enabled = False
            del link
            self._loop.close()

    def peers(self) -> int:
        """Other peers in the session now (0 when closed)."""
        link = self._link
        return 0 if link is None else int(link.num_peers)

    def present(self, t: float) -> bool:
        """The session has other peers: its time is followed."""
        return self.peers() > 0

    def stopped(self, t: float) -> bool:
        """The session's transport is stopped, after a peer started it (start/stop sync in
        use); a session whose transport nobody has started is never stopped."""
        link = self._link
        if link is None:
            return False
        playing = bool(link.playing)
        with self._lock:
            self._transport_used |= playing
            return self._transport_used and not playing

    def running(self, t: float) -> bool:
        """Followed, and not stopped: there is a beat grid."""
        return self.present(t) and not self.stopped(t)

    def _reading(self) -> tuple[float, float, float] | None:
        """(live clock time, session beat at it, seconds per beat); None when closed (or
        the tempo changing under every reading)."""
        link = self._link
        if link is None:
            return None
        for _ in range(READINGS):
            tempo = link.tempo
            tm, beat = beat_now(link, self.now)
            if link.tempo == tempo:  # else a peer changed it meanwhile: read again
                return tm, beat, 60.0 / tempo
        return None

    def beat_s(self, t: float) -> float | None:
        """Seconds per beat at the session's tempo; None while not followed."""
        link = self._link
        if link is None or not self.present(t):
            return None
        return 60.0 / float(link.tempo)

    def bpm(self, t: float) -> float | None:
        b = self.beat_s(t)
        return None if b is None else 60.0 / b

    def _at(self, t: float) -> tuple[float, float, float, float] | None:
        """(the session's beat at ``t``, and the reading it comes from: live clock time,
        session beat at it, seconds per beat); None without a running session."""
        if not self.running(t):
            return None
        reading = self._reading()
        if reading is None:
            return None
        tm, beat, per = reading
        return beat + (t - tm) / per, tm, beat, per

    def _next(self, t: float, every: float) -> float | None:
        at = self._at(t)
        if at is None:
            return None
        now, tm, beat, per = at
        target = math.ceil(now / every - 1e-9) * every
        return tm + (target - beat) * per

    def beats_at(self, t: float) -> float | None:
        """The session's beat at ``t`` (a multiple of the quantum on each bar line); None
        without a running session."""
        at = self._at(t)
        return None if at is None else at[0]

    def next_beat(self, t: float) -> float | None:
        """The first session beat at or after ``t``; None without a running session."""
        return self._next(t, 1.0)

    def next_bar(self, t: float) -> float | None:
        """The first bar line (a beat that is a multiple of the quantum) at or after ``t``;
        None without a running session."""
        return self._next(t, self.quantum)

    def propose(self, bpm: float) -> None:
        """Set the session's tempo (only for ``time.link_lead``)."""
        link = self._link
        bpm = min(max(bpm, MIN_BPM), MAX_BPM)
        if link is not None and abs(float(link.tempo) - bpm) > 1e-6:
            link.tempo = bpm

    def describe(self, t: float) -> str:
        n = self.peers()
        bpm = self.bpm(t)
        state = " (stopped: not answering)" if self.stopped(t) else ""
        return (f", on the Link session at {bpm:.1f} BPM with {n} peer{'s' * (n != 1)}{state}"
                if bpm is not None else "")


def open_link(tc: TimeConfig, bpm: float,
              log: Callable[[str], None]) -> LinkFollower | None:
    """The follower ``time.clock`` asks for: joined for ``link`` (ConfigError when the
    binding is missing), for ``auto`` when the binding is there (else said in the log),
    None otherwise."""
    if tc.clock not in ("link", "auto"):
        return None
    try:
        return LinkFollower(bpm, tc.link_quantum)
    except ConfigError as e:
        if tc.clock == "link":
            raise
        log(f"time.clock auto: following a MIDI clock only ({e})")
        return None
