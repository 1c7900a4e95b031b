"""Whose beat the companion follows: a MIDI clock while one ticks, else an Ableton Link
session while it has peers, else (``time.tempo: auto``) the call's own tempo, else the
internal tempo. One decision, asked by the engine (its tempo, the answer's first beat, the
metrical position of a note) and by the live status (what the tempo follows).
"""

from __future__ import annotations

import math
from typing import Protocol

from companion.config import TimeConfig
from companion.engine.listener import MelodyNote
from companion.engine.midiclock import ClockFollower
from companion.engine.tempo import estimate_beat

#: On a MIDI clock (a Link session), the answer starts on the first beat (bar) at least this
#: long after the phrase end: time to sample its first note before it is due.
CLOCK_LEAD_S = 0.01
#: Onsets of the call the tempo estimate (``time.tempo: auto``) looks at, the latest.
TEMPO_ONSETS = 32


class ExternalTime(Protocol):
    """A time the engine follows, on the live clock: a MIDI clock (midiclock.ClockFollower)
    or an Ableton Link session (companion.realtime.link.LinkFollower)."""

    def present(self, t: float) -> bool: ...
    def beat_s(self, t: float) -> float | None: ...
    def next_beat(self, t: float) -> float | None: ...
    def beats_at(self, t: float) -> float | None: ...


class LinkSession(ExternalTime, Protocol):
    """A shared session with bars and a transport, that the engine may propose a tempo to
    (companion.realtime.link.LinkFollower: the engine takes it as given, never opens one).
    Its bars are ``quantum`` beats long, from beat 0 of the session."""

    quantum: float

    def next_bar(self, t: float) -> float | None: ...
    def stopped(self, t: float) -> bool: ...
    def propose(self, bpm: float) -> None: ...
    def describe(self, t: float) -> str: ...


class Timekeeper:
    """The external times there are (a MIDI clock for ``time.clock`` follow / auto, a Link
    session given by ``use_link``) and which one leads at a time ``t``: the MIDI clock while
    one ticks, else the Link session while it has peers, else none (the companion's own
    tempo). ``time`` is the engine's own config section: a ``time.meter`` changed while
    playing counts from the next note."""

    def __init__(self, time: TimeConfig, tempo_bpm: float):
        self.time_cfg = time
        self.tempo_bpm = tempo_bpm  # the internal tempo (listen.tempo_bpm)
        self.midiclock = (ClockFollower(time.clock_window_ticks)
                          if time.clock in ("follow", "auto") else None)
        self.link: LinkSession | None = None  # for time.clock link / auto (use_link)
        self._link_was_stopped = False
        self._on_clock_tempo = False  # the beat is an external time's (and goes when it goes)
        self._downbeat = 0.0  # a MIDI clock's beat a bar starts on, for a clock with no Start
        self.held_beat: float | None = None  # the beat of the performer's last call (auto)

    def use_link(self, link: LinkSession | None) -> None:
        """Follow a Link session (companion.realtime.link.LinkFollower) while it has peers,
        after a MIDI clock (time.clock auto) if there is one."""
        self.link = link

    def feed_clock(self, msg, t: float) -> float:
        """A MIDI clock message received at ``t``; the seconds the clock's beats moved by
        (a JACK graph that stalled), 0.0 if they did not."""
        mc = self.midiclock
        if mc is None:
            return 0.0
        moved = mc.moved
        mc.feed(msg, t)
        return mc.moved - moved

    def external(self, t: float) -> ExternalTime | None:
        """The external time followed at ``t``: a MIDI clock while one ticks, else the Link
        session while it has peers, else None (the companion's own tempo)."""
        mc = self.midiclock
        if mc is not None and mc.present(t):
            return mc
        if self.link is not None and self.link.present(t):
            return self.link
        return None

    def source(self, t: float) -> tuple[str, ExternalTime | None]:
        """What the tempo follows at ``t``, for a person ("MIDI clock", "Link", "the call"
        for ``tempo: auto``, else "fixed"), and the external time followed (None for the
        last two)."""
        ext = self.external(t)
        if ext is None:
            return ("the call" if self.time_cfg.tempo == "auto" else "fixed"), None
        return ("Link" if ext is self.link else "MIDI clock"), ext

    def next_beat(self, t: float) -> float | None:
        """The external time's first beat at or after ``t`` (the clicks follow it); None
        without a running one."""
        ext = self.external(t)
        return None if ext is None else ext.next_beat(t)

    def link_stopped(self, t: float) -> bool:
        """The Link session is followed and its transport stopped: no answer is started."""
        link = self.link
        return link is not None and self.external(t) is link and link.stopped(t)

    def link_just_stopped(self, t: float) -> bool:
        """True once when the followed Link session's transport stops (the answer playing
        is then cut by the caller)."""
        stopped = self.link is not None and self.link_stopped(t)
        edge = stopped and not self._link_was_stopped
        self._link_was_stopped = stopped
        return edge

    def call_starts(self, t: float) -> None:
        """A call's first onset at ``t``: on a MIDI clock with no Start, the clock beat
        nearest it starts a bar."""
        mc = self.midiclock
        first = mc.beats_at(t) if mc is not None and not mc.counted() else None
        self._downbeat = float(round(first)) if first is not None else 0.0

    def tempo(self, t: float, call: list[MelodyNote], lead: bool = False) -> float | None:
        """The beat (seconds) to follow at ``t``: the MIDI clock's while one ticks, else the
        Link session's while it has peers, else (``tempo: auto``) the estimate from the call
        when it has enough notes, else the internal tempo when an external time has just
        gone; None: the beat stays as it is. The estimate holds the performer's tempo: its
        prior is centred on the estimate at the last phrase end (``held_beat``), which
        each phrase end (``lead``) sets. With ``lead`` and ``time.link_lead``, the
        companion's own tempo (the MIDI clock's, the call's estimate, or a fixed tempo) is
        first proposed to the Link session."""
        tc = self.time_cfg
        clock_beat = self.midiclock.beat_s(t) if self.midiclock is not None else None
        own = clock_beat
        if own is None and tc.tempo == "auto":
            own = estimate_beat([n.time for n in call[-TEMPO_ONSETS:]], tc.auto_min_bpm,
                                tc.auto_max_bpm, self.tempo_bpm, self.held_beat)
            if lead and own is not None:
                self.held_beat = own
        link = self.link
        if lead and link is not None and tc.link_lead:
            lead_beat = own if own is not None or tc.tempo == "auto" else 60.0 / self.tempo_bpm
            if lead_beat is not None:
                link.propose(60.0 / lead_beat)
        ext_beat = clock_beat
        if ext_beat is None and link is not None:
            ext_beat = link.beat_s(t)
        beat = ext_beat if ext_beat is not None else own
        if beat is None and self._on_clock_tempo:
            beat = 60.0 / self.tempo_bpm  # the clock went: its tempo goes with it
        self._on_clock_tempo = ext_beat is not None
        return beat

    def describe(self, t: float, beat_s: float) -> str:
        """For the log: what the tempo (``beat_s`` now) follows at ``t``."""
        ext = self.external(t)
        if ext is None:
            return f" at {60 / beat_s:.1f} BPM" + (
                " (from the call)" if self.time_cfg.tempo == "auto" else "")
        if ext is self.link:
            return self.link.describe(t)
        return (f", on the MIDI clock at {60 / beat_s:.1f} BPM"
                + ("" if self.midiclock.running(t) else " (stopped: no beat grid)"))

    def first_beat(self, t: float, anchor: float, beat_s: float) -> float:
        """The first beat at or after ``t``: the clock's while one runs, else the Link
        session's first bar line while it has peers, else on the grid of the call (from its
        first onset ``anchor``, ``beat_s`` apart)."""
        ext = self.external(t)
        if ext is not None:
            b = (self.link.next_bar(t + CLOCK_LEAD_S) if ext is self.link
                 else ext.next_beat(t + CLOCK_LEAD_S))
            if b is not None:
                return b
        return anchor + math.ceil((t - anchor) / beat_s - 1e-9) * beat_s

    def grid_at(self, t: float, call_beats: float) -> tuple[float, float | None]:
        """(beats, bar) of an onset at ``t``: its beat count on the grid followed (the MIDI
        clock's song position while one runs, the Link session's beat while it has peers,
        else ``call_beats``, its beats on the call's own grid from its first onset) and the
        bar's length in beats, bars starting at beat 0 (None: the bar is unknown). The bar
        is Link's quantum, else ``time.meter``; a MIDI clock with no Start counts bars from
        the clock beat nearest the call's first onset (``call_starts``)."""
        bar: float | None = self.time_cfg.meter
        ext = self.external(t)
        if ext is not None and (b := ext.beats_at(t)) is not None:
            if ext is self.link:
                return b, self.link.quantum
            if self.midiclock is not None and self.midiclock.counted():
                return b, bar
            return b - self._downbeat, bar
        return call_beats, bar
