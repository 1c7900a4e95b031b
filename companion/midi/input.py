"""MIDI input read by a thread of ours that polls python-rtmidi's queue.

Rule: no Python runs in the MIDI system's own thread (JACK's process thread, ALSA's input
thread), so no rtmidi callback is ever set and mido's input, which always sets one, is not
used. A callback there needs the GIL, so any busy Python thread (a garbage collection)
makes JACK miss cycles and drop their MIDI; and a port closed while messages arrive can
free the callback that thread is about to call.

Polled, the MIDI system's thread only fills RtMidi's queue, and closing is safe at any
moment (`PolledInput.close` keeps that queue empty until the port is gone, and closes the
client last). Reading is up to ``POLL_S`` late, or later when Python is busy, but the arrival
times given with each message are not: RtMidi stamps every message in the MIDI system's
thread, as seconds since the one before, and `ArrivalClock` puts those stamps on our clock.

A sysex whose F7 never comes (a cable pulled mid-dump) must not make the port deaf. By the
MIDI rule any status byte but a real-time one ends a sysex, but RtMidi's JACK input keeps
appending every later message to the open sysex, delivering nothing, until an event that
ends in F7 (its ALSA input ends it at the next event that is not sysex). So over JACK the
port sends itself a lone F7 through a port of its own (``SYSEX_END_PORT``) whenever nothing
was read for ``SYSEX_END_S``, and a sysex that holds status bytes is split back into its
messages (`split`): what came after a cut sysex is heard at most that late.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable

import mido

from companion.midi.jacklib import (
    SETTLE_S,
    SILENT_S,
    SYSEX_END_PORT,
    SYSEX_END_S,
    load_rtmidi,
    make_client,
    sysex_end_client,
)

#: Seconds between two looks at the queue while messages come: the most one waits to be
#: read (its arrival time is kept exactly all the same, see ArrivalClock).
POLL_S = 0.0005
#: After this long without a message, looks come every ``IDLE_POLL_S`` instead: each look
#: costs ~30 us of CPU on a KVM guest (a sleep's wake-up), 5% of a core at POLL_S.
IDLE_AFTER_S = 2.0
IDLE_POLL_S = 0.002
#: RtMidi's input queue (messages held while nobody reads, e.g. before a callback is set).
QUEUE_SIZE = 4096
#: Keyboards send it every 300 ms; RtMidi would drop it after stamping it, losing its interval.
ACTIVE_SENSING = [0xFE]
SYSEX, EOX, REALTIME = 0xF0, 0xF7, 0xF8  # real-time bytes: 0xF8 and above
#: Reads of a port list that changed while it was read, before its error stands.
LIST_TRIES = 5


def port_names(listing: Callable[[], list[str]]) -> list[str]:
    """What ``listing`` (an rtmidi ``get_ports``, mido's ``get_input_names``) returns, read
    again when a port went away while it was read: rtmidi counts the ports, then asks each
    one's name, and raises InvalidPortError for one gone in between."""
    rtmidi = load_rtmidi()

    for i in range(LIST_TRIES):
        try:
            return list(listing())
        except rtmidi.InvalidPortError:
            if i == LIST_TRIES - 1:
                raise
            time.sleep(0.01)
    raise AssertionError("unreachable")


def split(data: list[int]) -> list[list[int]]:
    """The messages in ``data``, RtMidi's whole messages run together, by the MIDI rule: a
    status byte starts a message; a real-time byte (F8-FF) is a message of its own, after the
    message before it, or inside a sysex, which goes on; a sysex (F0) runs to its F7, or is
    cut by the next status byte that is not real-time (and then kept without its F7: not a
    message mido reads, so counted as invalid). An F7 with no sysex open ends nothing."""
    out: list[list[int]] = []
    cur: list[int] = []
    for b in data:
        if b >= REALTIME:
            if cur[:1] != [SYSEX]:
                if cur:
                    out.append(cur)
                cur = []
            out.append([b])
        elif b == EOX:
            if cur:
                out.append(cur + [b] if cur[0] == SYSEX else cur)
            cur = []
        elif b & 0x80:
            if cur:
                out.append(cur)
            cur = [b]
        else:
            cur.append(b)
    if cur:
        out.append(cur)
    return out


def decode(data: list[int], t: float) -> tuple[list[mido.Message], int]:
    """The messages in what RtMidi delivered as one (``split`` where it begins a sysex, which
    may hold what came after it), each at ``t``; and how many of its parts were not MIDI."""
    msgs, invalid = [], 0
    for part in split(data) if data[:1] == [SYSEX] else [data]:
        try:
            msgs.append(mido.Message.from_bytes(part, time=t))
        except Exception:  # noqa: BLE001 - mido raises IndexError too (a truncated bend)
            invalid += 1
    return msgs, invalid


class ArrivalClock:
    """When each message arrived, on our clock, from RtMidi's stamps (seconds between one
    message and the next, on the MIDI system's clock) and from when we read them.

    A message read at ``t`` arrived at or before ``t``, and after the last look that found
    the queue empty: so ``offset`` (our clock minus the stamps' running sum) is at most
    ``t - sum`` for every message read, and the smallest of those is within a poll's
    jitter of the truth after a handful of messages (a dense stream such as a MIDI clock
    pins it to microseconds). Where a stamp would put a message before that empty look
    (the clocks drifted, or RtMidi dropped a message from a full queue and its interval
    with it), the offset moves up to agree.
    """

    def __init__(self, opened_at: float):
        self.total = 0.0  # the stamps' running sum: seconds since the first message
        self.offset = math.inf
        self.empty_at = opened_at  # our time of the last look that found nothing

    def arrival(self, delta: float, read_at: float) -> float:
        self.total += delta
        self.offset = max(min(self.offset, read_at - self.total), self.empty_at - self.total)
        return self.total + self.offset


class PolledInput:
    """An open rtmidi input; ``callback`` gets each message on this port's thread, a
    ``mido.Message`` whose ``time`` is its arrival on ``clock`` (ArrivalClock). While no
    callback is set, messages wait in RtMidi's queue for the next one. ``sysex_end``, an
    rtmidi output connected to this port alone, gets a lone F7 after ``SYSEX_END_S`` without
    a message read (and only while a callback reads them); when nothing comes back for
    ``SILENT_S``, the port is ``silenced`` (see ``when_silenced``)."""

    def __init__(self, rt, name: str, sysex_end=None):
        self._rt = rt
        self._sysex_end = sysex_end
        self.name = name
        self.clock = time.perf_counter  # RealClock's: Live believes these stamps
        self.arrivals = ArrivalClock(self.clock())
        self.closed = False
        self.invalid = 0  # messages that were not MIDI, dropped
        self.errors = 0  # callbacks (or reads) that raised: the port goes on reading
        self._callback: Callable[[mido.Message], None] | None = None
        self._lock = threading.RLock()  # callback swaps wait for the message in hand
        self._stop = threading.Event()
        self._closing = threading.Event()  # deliver nothing more; keep the queue empty
        self._opened = time.monotonic()
        self.silenced = False  # JACK stopped moving MIDI: our own F7s no longer come back
        #: when a message (our own F7s too) was last read, on ``clock``
        self.last_read = self.clock()
        self._on_silenced: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"midi-in {name}", daemon=True)
        self._thread.start()

    @property
    def callback(self) -> Callable[[mido.Message], None] | None:
        return self._callback

    @callback.setter
    def callback(self, func: Callable[[mido.Message], None] | None) -> None:
        with self._lock:
            self._callback = func

    def when_silenced(self, func: Callable[[], None] | None) -> None:
        """``func()`` is called once, on this port's thread, if JACK stops moving MIDI (over
        JACK only: see ``SILENT_S``)."""
        self._on_silenced = func

    def _run(self) -> None:
        get, now, arrivals, stop = self._rt.get_message, self.clock, self.arrivals, self._stop
        closing = self._closing
        last = read = now()  # the last message that keeps the looks frequent; any message
        unheard = None  # when the first F7 was sent since the last message read
        while True:
            time.sleep(POLL_S if now() - last < IDLE_AFTER_S else IDLE_POLL_S)
            if stop.is_set():
                return
            if closing.is_set():
                self._drain()
                continue
            with self._lock:
                func = self._callback
                if func is None:
                    unheard = None  # nothing is read meanwhile: no silence to count
                    continue
                if (self._sysex_end is not None and not self.silenced
                        and now() - read >= SYSEX_END_S):
                    if unheard is None:
                        unheard = now()
                    if now() - unheard >= SILENT_S:
                        self._silence()
                    else:
                        read = now()  # nothing for a while: a sysex may be holding it all
                        self._end_sysex()
                while not stop.is_set() and not closing.is_set():
                    before = now()
                    try:
                        event = get()
                    except Exception as e:  # noqa: BLE001 - said; looked at again next poll
                        self._count_error(e)
                        break
                    if event is None:
                        arrivals.empty_at = before
                        break
                    data, delta = event
                    read = self.last_read = now()
                    unheard = None
                    t = arrivals.arrival(delta, read)
                    if data != ACTIVE_SENSING and data != [EOX]:  # read (its interval
                        last = read  # counts), then dropped: a keyboard's 3 a second and
                        self._deliver(func, data, t)  # our own sysex ends keep nothing awake

    def moves_midi(self, timeout: float) -> bool:
        """Whether a message is read within ``timeout`` from now (waiting at most that
        long). Over JACK, while a callback reads, our own F7s come back every SYSEX_END_S
        or so while JACK moves MIDI: False says that its server hangs or is gone."""
        since = self.clock()
        while self.last_read <= since:
            if self.clock() - since >= timeout:
                return False
            time.sleep(0.005)
        return True

    def _drain(self) -> None:
        """Read and drop what is queued (the port is closing): RtMidi's queue never fills,
        so its JACK thread never writes "queue limit reached" to stderr, which is where a
        client's closing cancels that thread, and libstdc++ then aborts the process."""
        with contextlib.suppress(Exception):
            while self._rt.get_message() is not None:
                pass

    def _silence(self) -> None:
        self.silenced = True
        if self._on_silenced is not None:
            try:
                self._on_silenced()
            except Exception as e:  # noqa: BLE001 - said; the port goes on
                self._count_error(e)

    def _end_sysex(self) -> None:
        try:
            self._sysex_end.send_message([EOX])
        except Exception as e:  # noqa: BLE001 - said; tried again after SYSEX_END_S
            self._count_error(e)

    def _deliver(self, func, data: list[int], t: float) -> None:
        msgs, invalid = decode(data, t)
        self.invalid += invalid
        for msg in msgs:
            try:
                func(msg)
            except Exception as e:  # noqa: BLE001 - a bad callback must not end the input
                self._count_error(e)

    def _count_error(self, e: Exception) -> None:
        """Counted; the first one said on stderr (the input goes on reading)."""
        self.errors += 1
        if self.errors == 1:
            print(f"MIDI input {self.name}: {type(e).__name__}: {e}", file=sys.stderr)

    def close(self) -> None:
        """Deliver nothing more, then close: the ports first, ours and then the sysex-end
        one (see ``_release``), while this port's thread still empties RtMidi's queue; then
        that thread stops, and only then the clients close (a JACK client's process thread
        is cancelled as it closes: with no port it is idle). Idempotent. Called from a
        callback, it returns at once and the port closes after that callback."""
        if self.closed:
            return
        self.closed = True
        self._closing.set()
        if self._thread is threading.current_thread():
            threading.Thread(target=self._release, name=f"midi-in {self.name} close",
                             daemon=True).start()
            return
        self._release()

    def _release(self) -> None:
        # JACK2's clients race with their own port changes: a port freed while the client
        # still handles the notices of an earlier change (its latency callback walks the
        # port list being changed), or an output of ours freed while connected to our input
        # and its number at once taken by a new input (a process thread still reading the
        # last cycle's connections sees two inputs feeding each other, and its buffer
        # lookup recurses), crashes the process. So each change waits for the graph to
        # have settled: the input is closed SETTLE_S after its opening, its sysex-end
        # output SETTLE_S after it.
        time.sleep(max(0.0, self._opened + SETTLE_S - time.monotonic()))
        with contextlib.suppress(Exception):
            self._rt.close_port()
        if self._sysex_end is not None:
            time.sleep(SETTLE_S)
            with contextlib.suppress(Exception):
                self._sysex_end.close_port()
        self._stop.set()
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():  # a callback that never returns: its rtmidi stays
            return
        for rt in (self._rt, self._sysex_end):
            if rt is not None:
                with contextlib.suppress(Exception):
                    rt.delete()

    def __repr__(self) -> str:
        return f"<PolledInput {self.name!r}{' closed' if self.closed else ''}>"


def open_input(
    api: str,
    name: str | None = None,
    virtual: bool = False,
    client_name: str | None = None,
    callback: Callable[[mido.Message], None] | None = None,
    port_name: str | None = None,
) -> PolledInput:
    """Open an input as mido's rtmidi backend names them (``api`` is its name, e.g.
    UNIX_JACK): a virtual port ``client_name:name``, or else the port listed as ``name``,
    listened to by our client ``client_name`` through our port ``port_name``.
    Raises OSError for an unknown port; rtmidi.SystemError when the MIDI system is gone."""
    rtmidi = load_rtmidi()

    rt = make_client(lambda: rtmidi.MidiIn(rtapi=getattr(rtmidi, f"API_{api}"),
                                           name=client_name, queue_size_limit=QUEUE_SIZE),
                     api)
    sysex_end = None
    try:
        if api == "UNIX_JACK":
            sysex_end = make_client(lambda: rtmidi.MidiOut(
                rtapi=rtmidi.API_UNIX_JACK, name=sysex_end_client(client_name)), api)
            before = set(port_names(sysex_end.get_ports))
        if virtual:
            if name is None:
                raise OSError("a virtual port needs a name")
            rt.open_virtual_port(name)
        else:
            def pick(listed: list[str]) -> int:
                nonlocal name
                if api == "LINUX_ALSA" and name is not None:
                    from mido.backends.rtmidi_utils import expand_alsa_port_name

                    name = expand_alsa_port_name(listed, name)
                if not listed:
                    raise OSError("no ports available")
                if name is None:
                    name = listed[0]
                if name not in listed:
                    raise OSError(f"unknown port {name!r}")
                return listed.index(name)

            open_listed(rt, pick, port_name)
        # everything is read (a type RtMidi ignores loses its interval): MIDI clock and
        # sysex as mido's input gives them; active sensing is dropped after reading
        rt.ignore_types(sysex=False, timing=False, active_sense=False)
        if sysex_end is not None:
            own = name if virtual else (port_name or "RtMidi input")
            sysex_end = _connect_to_own(sysex_end, before, own)
    except BaseException:
        for r in (rt, sysex_end):
            with contextlib.suppress(Exception):
                r.delete()
        raise
    port = PolledInput(rt, name, sysex_end)
    port.callback = callback
    return port


def open_listed(rt, pick: Callable[[list[str]], int | None], port_name: str | None) -> str | None:
    """Open on ``rt`` the port that ``pick`` chooses (an index) among those listed, and return
    its name; None where it chooses none. rtmidi opens a port by its index in the list, and
    raises InvalidPortError where a port went away since: then the list is read again."""
    rtmidi = load_rtmidi()

    for i in range(LIST_TRIES):
        listed = port_names(rt.get_ports)
        index = pick(listed)
        if index is None:
            return None
        try:
            rt.open_port(index, port_name)
            return listed[index]
        except rtmidi.InvalidPortError:
            if i == LIST_TRIES - 1:
                raise
            time.sleep(0.01)
    raise AssertionError("unreachable")


def _connect_to_own(out, before: set[str], own: str):
    """``out`` connected to the one input port named ``own`` that appeared since ``before``
    (JACK may have renamed our client ``NAME-01``), or deleted and None where that is not
    exactly one port (the input then works without ending cut sysex itself)."""
    def pick(listed: list[str]) -> int | None:
        mine = [i for i, p in enumerate(listed) if p not in before and p.rpartition(":")[2] == own]
        return mine[0] if len(mine) == 1 else None

    if open_listed(out, pick, SYSEX_END_PORT) is None:
        out.delete()
        print(f"MIDI input {own}: its own port not found once: a cut sysex will hold its input "
              "until an F7 comes", file=sys.stderr)
        return None
    return out
