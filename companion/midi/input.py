"""MIDI input read by a thread of ours that polls python-rtmidi's queue.

Rule: no Python runs in the MIDI system's own thread (JACK's process thread, ALSA's input
thread), so no rtmidi callback is ever set and mido's input, which always sets one, is not
used. A callback there needs the GIL, so any busy Python thread (a garbage collection)
makes JACK miss cycles and drop their MIDI; and a port closed while messages arrive can
free the callback that thread is about to call.

Polled, the MIDI system's thread only fills RtMidi's queue, and closing is safe at any
moment. Reading is up to ``POLL_S`` late, or later when Python is busy, but the arrival
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
#: Over JACK, after this long without reading anything the port sends itself a lone F7 (the
#: end of any sysex RtMidi holds open): what comes after a cut sysex waits at most this long.
SYSEX_END_S = 0.05
#: The name of the output port (a JACK client of its own) that sends it, connected only to
#: this input's own port.
SYSEX_END_PORT = "sysex-end"


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
    a message read (and only while a callback reads them)."""

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
        self._thread = threading.Thread(target=self._run, name=f"midi-in {name}", daemon=True)
        self._thread.start()

    @property
    def callback(self) -> Callable[[mido.Message], None] | None:
        return self._callback

    @callback.setter
    def callback(self, func: Callable[[mido.Message], None] | None) -> None:
        with self._lock:
            self._callback = func

    def _run(self) -> None:
        get, now, arrivals, stop = self._rt.get_message, self.clock, self.arrivals, self._stop
        last = read = now()  # the last message that keeps the looks frequent; any message
        while True:
            time.sleep(POLL_S if now() - last < IDLE_AFTER_S else IDLE_POLL_S)
            if stop.is_set():
                return
            with self._lock:
                func = self._callback
                if func is None:
                    continue
                if self._sysex_end is not None and now() - read >= SYSEX_END_S:
                    read = now()  # nothing for a while: a sysex may be holding it all
                    self._end_sysex()
                while not stop.is_set():
                    before = now()
                    try:
                        event = get()
                    except Exception as e:  # noqa: BLE001 - said; looked at again next poll
                        self._said(e)
                        break
                    if event is None:
                        arrivals.empty_at = before
                        break
                    data, delta = event
                    read = now()
                    t = arrivals.arrival(delta, read)
                    if data != ACTIVE_SENSING and data != [EOX]:  # read (its interval
                        last = read  # counts), then dropped: a keyboard's 3 a second and
                        self._deliver(func, data, t)  # our own sysex ends keep nothing awake

    def _end_sysex(self) -> None:
        try:
            self._sysex_end.send_message([EOX])
        except Exception as e:  # noqa: BLE001 - said; tried again after SYSEX_END_S
            self._said(e)

    def _deliver(self, func, data: list[int], t: float) -> None:
        msgs, invalid = decode(data, t)
        self.invalid += invalid
        for msg in msgs:
            try:
                func(msg)
            except Exception as e:  # noqa: BLE001 - a bad callback must not end the input
                self._said(e)

    def _said(self, e: Exception) -> None:
        """Counted; the first one said on stderr (the input goes on reading)."""
        self.errors += 1
        if self.errors == 1:
            print(f"MIDI input {self.name}: {type(e).__name__}: {e}", file=sys.stderr)

    def close(self) -> None:
        """Stop reading, then close the port and its client. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        with contextlib.suppress(Exception):
            self._rt.close_port()
        with contextlib.suppress(Exception):
            self._rt.delete()
        if self._sysex_end is not None:
            with contextlib.suppress(Exception):
                self._sysex_end.delete()

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
    import rtmidi

    rt = rtmidi.MidiIn(rtapi=getattr(rtmidi, f"API_{api}"), name=client_name,
                       queue_size_limit=QUEUE_SIZE)
    sysex_end = None
    try:
        if api == "UNIX_JACK":
            sysex_end = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name=client_name)
            before = set(sysex_end.get_ports())
        if virtual:
            if name is None:
                raise OSError("a virtual port needs a name")
            rt.open_virtual_port(name)
        else:
            listed = rt.get_ports()
            if api == "LINUX_ALSA" and name is not None:
                from mido.backends.rtmidi_utils import expand_alsa_port_name

                name = expand_alsa_port_name(listed, name)
            if not listed:
                raise OSError("no ports available")
            if name is None:
                name = listed[0]
            if name not in listed:
                raise OSError(f"unknown port {name!r}")
            rt.open_port(listed.index(name), port_name)
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


def _connect_to_own(out, before: set[str], own: str):
    """``out`` connected to the one input port named ``own`` that appeared since ``before``
    (JACK may have renamed our client ``NAME-01``), or deleted and None where that is not
    exactly one port (the input then works without ending cut sysex itself)."""
    mine = [i for i, p in enumerate(out.get_ports())
            if p not in before and p.rpartition(":")[2] == own]
    if len(mine) != 1:
        out.delete()
        print(f"MIDI input {own}: its own port not found once among {len(mine)}: a cut sysex "
              "will hold its input until an F7 comes", file=sys.stderr)
        return None
    out.open_port(mine[0], SYSEX_END_PORT)
    return out
