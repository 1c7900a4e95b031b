"""Playing timed answer notes on a port: note-ons and note-offs at absolute deadlines.

Every deadline is absolute (clock seconds), so a late event never delays the next one
and a long answer does not drift. ``Timeline`` is the pure part (what is due, what
sounds, how much of each answer has started); ``Scheduler`` plays it from a thread on
the real clock, ``VirtualScheduler`` on a virtual clock for `companion respond` and tests.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable

import mido

from companion.engine.protocols import ACCOMPANIMENT, Clock, TimedNote
from companion.realtime.clock import SPIN_S, RealClock, realtime_thread

NOTE_OFF, NOTE_ON = 0, 1  # at equal times a note-off goes first: a repeated pitch re-strikes


class Timeline:
    """Pending note events, in time order, and the notes they leave sounding (by channel and
    pitch: the same pitch on two channels is two notes)."""

    def __init__(self, channel: int = 0) -> None:
        self.channel = channel  # a note's channel when it names none
        # (time, NOTE_OFF|NOTE_ON, seq, answer, index, pitch, velocity, channel)
        self._heap: list[tuple[float, int, int, int, int, int, int, int]] = []
        self._seq = 0
        #: (channel, pitch) -> (answer, seq of its note-on)
        self.sounding: dict[tuple[int, int], tuple[int, int]] = {}
        self.started: dict[int, int] = {}  # answer -> note-ons sent
        self.added: dict[int, int] = {}  # answer -> notes added

    def add(self, answer: int, note: TimedNote) -> None:
        index = self.added.get(answer, 0)
        self.added[answer] = index + 1
        self._seq += 1
        s = self._seq
        p, v = note.pitch, note.velocity
        ch = self.channel if note.channel is None else note.channel
        heapq.heappush(self._heap, (note.start, NOTE_ON, s, answer, index, p, v, ch))
        heapq.heappush(self._heap, (note.end, NOTE_OFF, s, answer, index, p, 0, ch))

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pending(self, answer: int | None = None) -> bool:
        """Events still to play (of ``answer``, or of any answer)."""
        if answer is None:
            return bool(self._heap)
        return any(e[3] == answer for e in self._heap)

    def shift(self, after: float, dt: float) -> None:
        """Every pending event later than ``after`` moves by ``dt`` seconds."""
        self._heap = [(e[0] + dt, *e[1:]) if e[0] > after else e for e in self._heap]
        heapq.heapify(self._heap)

    def pop_due(self, now: float,
                mute: bool = False) -> list[tuple[int, int, int, int, int, int]]:
        """Events due at ``now``, as (kind, answer, index, pitch, velocity, channel), marking
        what sounds.

        A note-off whose note was re-struck since is dropped: it would cut the new note.
        With ``mute`` (shutting down) note-ons are dropped, and so their note-offs.
        """
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, kind, seq, answer, index, pitch, vel, ch = heapq.heappop(heap)
            key = (ch, pitch)
            if kind == NOTE_ON:
                if mute:
                    continue
                if key in self.sounding:  # overlapping same note: end the old one first
                    out.append((NOTE_OFF, answer, index, pitch, 0, ch))
                self.sounding[key] = (answer, seq)
                self.started[answer] = self.started.get(answer, 0) + 1
                out.append((NOTE_ON, answer, index, pitch, vel, ch))
            elif self.sounding.get(key, (None, None))[1] == seq:
                del self.sounding[key]
                out.append((NOTE_OFF, answer, index, pitch, 0, ch))
        return out

    def cancel(self, answer: int | None = None) -> list[tuple[int, int]]:
        """Drop the pending events (of ``answer``, or all); return the notes (channel, pitch)
        left sounding by it, which the caller turns off."""
        if answer is None:
            self._heap.clear()
            notes = list(self.sounding)
            self.sounding.clear()
            return notes
        self._heap = [e for e in self._heap if e[3] != answer]
        heapq.heapify(self._heap)
        notes = [k for k, (a, _) in self.sounding.items() if a == answer]
        for k in notes:
            del self.sounding[k]
        return notes


#: ``on_event(kind, t, **data)``: "note_on" / "note_off" right after the send, with
#: ``answer`` (id), ``index`` (of the note in the answer), ``pitch``.
EventHook = Callable[..., None]
#: ``on_added(answer, note, t)``: a note handed to the player (``add``), t = clock time of
#: the hand-over, before the note is queued. For measurements (the bench's answer latency).
AddedHook = Callable[[int, TimedNote, float], None]


class PortPlayer:
    """Playback to a send function (a port), whichever clock drives it: the engine's Player
    (companion.engine.protocols).

    ``lock`` serialises every send to the output port (answers, passthrough, shutdown).
    """

    def __init__(
        self,
        send: Callable[[mido.Message], None],
        clock: Clock,
        channel: int = 0,
        on_event: EventHook | None = None,
    ):
        self._send = send
        self.clock = clock
        self.channel = channel  # 0-based
        self.on_event = on_event
        self.lock = threading.RLock()
        self.timeline = Timeline(channel)
        #: Set (signal-safe, no lock) at shutdown: no note-on is sent after it.
        self.halted = False
        self._on_added: AddedHook | None = None

    def observe(self, on_added: AddedHook | None) -> None:
        """Report every note handed over from now on to ``on_added`` (None: stop). Unset, it
        costs ``add`` one test."""
        self._on_added = on_added

    def add(self, answer: int, note: TimedNote) -> None:
        on_added = self._on_added
        if on_added is not None:
            on_added(answer, note, self.clock.now())
        with self.lock:
            self.timeline.add(answer, note)
        self._wake()

    def begin(self, answer: int) -> None:
        """A new answer starts: what is left of earlier ones stops (not the accompaniment)."""
        with self.lock:
            for a in [a for a in self.timeline.added if a not in (answer, ACCOMPANIMENT)]:
                self._off(self.timeline.cancel(a))
                del self.timeline.added[a]
                self.timeline.started.pop(a, None)

    def shift(self, after: float, dt: float) -> None:
        """What is still to play after ``after`` moves by ``dt`` seconds (the clock it was
        placed on moved)."""
        with self.lock:
            self.timeline.shift(after, dt)
        self._wake()

    def started(self, answer: int) -> int:
        """How many notes of ``answer`` have begun to sound."""
        with self.lock:
            return self.timeline.started.get(answer, 0)

    def busy(self, answer: int) -> bool:
        """``answer`` still has notes to start or to end."""
        with self.lock:
            return self.timeline.pending(answer)

    def cancel(self, answer: int | None = None) -> int:
        """Stop ``answer`` (or everything) now, its sounding notes off; the notes it had begun."""
        with self.lock:
            self._off(self.timeline.cancel(answer))
            return self.timeline.started.get(answer, 0) if answer is not None else 0

    def send(self, msg: mido.Message) -> None:
        with self.lock:
            self._send(msg)

    def _off(self, notes: list[tuple[int, int]]) -> None:
        for ch, p in notes:
            self._send(mido.Message("note_off", channel=ch, note=p, velocity=0))

    def _play_due(self, now: float) -> list[tuple[str, float, int, int, int, int]]:
        """Send what is due; the events for the hook, to be reported outside the lock."""
        done = []
        with self.lock:
            for kind, answer, index, pitch, vel, ch in self.timeline.pop_due(now, self.halted):
                if kind == NOTE_ON:
                    self._send(mido.Message("note_on", channel=ch, note=pitch, velocity=vel))
                else:
                    self._send(mido.Message("note_off", channel=ch, note=pitch, velocity=0))
                if self.on_event is not None:
                    done.append(("note_on" if kind == NOTE_ON else "note_off",
                                 self.clock.now(), answer, index, pitch, ch))
        return done

    def _report(self, done: list[tuple[str, float, int, int, int, int]]) -> None:
        if self.on_event is not None:
            for kind, t, answer, index, pitch, ch in done:
                self.on_event(kind, t, answer=answer, index=index, pitch=pitch, channel=ch)

    def _wake(self) -> None:
        pass


class VirtualScheduler(PortPlayer):
    """Playback on a virtual clock: events happen when the driver calls ``advance``."""

    def advance(self, now: float) -> None:
        """Play everything due up to ``now``, each event at its own time."""
        while True:
            t = self.timeline.next_time()
            if t is None or t > now:
                break
            if hasattr(self.clock, "set"):
                self.clock.set(t)
            self._report(self._play_due(t))

    def flush(self) -> None:
        """Play every pending event."""
        self.advance(float("inf"))


class Scheduler(PortPlayer):
    """Playback from its own thread on the real clock: sleep until just before a deadline,
    then spin, so that a note leaves within a fraction of a millisecond of its time.
    """

    def __init__(
        self,
        send: Callable[[mido.Message], None],
        clock: Clock | None = None,
        channel: int = 0,
        on_event: EventHook | None = None,
        spin_s: float = SPIN_S,
    ):
        super().__init__(send, clock or RealClock(), channel, on_event)
        self.spin_s = spin_s
        self._cond = threading.Condition(self.lock)
        self._stop = False
        self.realtime: bool | None = None  # whether the OS gave the thread real-time priority
        self._thread = threading.Thread(target=self._run, name="companion-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _run(self) -> None:
        self.realtime = realtime_thread()
        now = self.clock.now
        while True:
            with self._cond:
                if self._stop:
                    return
                t = self.timeline.next_time()
                if t is None:
                    self._cond.wait()
                    continue
                left = t - now()
                if left > self.spin_s:
                    # woken early by a new (maybe earlier) event or a cancel: look again
                    self._cond.wait(left - self.spin_s)
                    continue
            while now() < t:  # the last ~1.5 ms: spin (holding the GIL is fine this briefly)
                pass
            self._report(self._play_due(now()))

    def close(self) -> None:
        """Halt, turn off what sounds, stop the thread."""
        self.halted = True
        with self._cond:
            self._stop = True
            self._off(self.timeline.cancel())
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
