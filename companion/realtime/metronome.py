"""Count-in and metronome: a click on every beat, from its own thread on the real clock.

The beats are the MIDI clock's while one runs, else the companion's internal tempo (the
configured one, or the one estimated from the calls) from the moment the clicks began.
A count-in is ``count_in`` clicks when the companion starts; with ``always`` the clicks
go on until it stops. Clicks are short (``CLICK_S``) notes on their own channel and note,
sent through the player's lock, so never at the same instant as an answer note's bytes,
and never after the companion is halted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import mido

from companion.engine.protocols import Clock
from companion.realtime.clock import StopFlag

CLICK_S = 0.05


class Metronome:
    """Which beats click: pure logic, for the thread below and the tests."""

    def __init__(self, count_in: int, always: bool):
        self.count_in = count_in
        self.always = always
        self.clicked = 0

    def wants(self) -> bool:
        """Whether the next beat clicks."""
        return self.always or self.clicked < self.count_in

    def next_beat(self, now: float, last: float | None, beat_s: float,
                  clock_beat: float | None) -> float:
        """The next beat after the last click: the clock's when it runs, else one internal
        beat after the last click (or now, for the first)."""
        if clock_beat is not None:
            if last is not None and clock_beat <= last + 0.5 * beat_s:
                return clock_beat + beat_s  # that beat has clicked already
            return clock_beat
        return now if last is None else last + beat_s


class ClickThread:
    """Plays a Metronome: ``send`` takes a message (and serialises it with other output)."""

    def __init__(
        self,
        metronome: Metronome,
        send: Callable[[mido.Message], None],
        clock: Clock,
        beat_s: Callable[[], float],
        clock_beat: Callable[[float], float | None],
        halted: Callable[[], bool],
        channel: int = 9,
        note: int = 37,
        velocity: int = 90,
    ):
        self.metronome = metronome
        self.send = send
        self.clock = clock
        self.beat_s = beat_s
        self.clock_beat = clock_beat
        self.halted = halted
        self.on = mido.Message("note_on", channel=channel, note=note, velocity=velocity)
        self.off = mido.Message("note_off", channel=channel, note=note, velocity=0)
        self._stop = StopFlag()
        self._thread = threading.Thread(target=self._run, name="companion-metronome",
                                        daemon=True)

    def start(self) -> None:
        if self.metronome.wants():
            self._thread.start()

    def _run(self) -> None:
        m, clock = self.metronome, self.clock
        last = None
        while m.wants() and not self._stop.is_set():
            now = clock.now()
            beat = m.next_beat(now, last, self.beat_s(), self.clock_beat(now))
            if not clock.wait_until(beat, self._stop) or self.halted():
                return
            self.send(self.on)
            m.clicked += 1
            last = beat
            clock.wait_until(beat + CLICK_S)  # the note-off is sent even when stopping
            self.send(self.off)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
