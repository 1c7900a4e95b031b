"""Named ports that come and go: a keyboard unplugged, a synth's JACK client quitting.

When the companion was told to connect to a port by name (``--input`` / ``--output``),
a watcher thread lists the ports about once a second. A port that disappears is said
once, and the companion goes on running (an output with nowhere to go simply sounds
nowhere); when a port matching the same name comes back, it is opened again and put in
place. The hot path (input callback, engine, scheduler) is never touched: the new port
is put in place by ``Live.swap_input`` / ``Live.swap_output`` (the input's callback moves
to it; the output is swapped under the send lock), and the old one closed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from companion.midi.input import open_input, port_names
from companion.midi.jacklib import load_rtmidi
from companion.midi.ports import BACKENDS, PortError, match_port, quiet_stderr

#: Seconds between two looks at the port list: modest, a listing costs a JACK round trip.
POLL_S = 1.0


class Swaps(Protocol):
    """What the watcher needs of the live companion: to put a reopened port in place."""

    def swap_input(self, port: Any) -> Any: ...

    def swap_output(self, port: Any) -> Any: ...


@dataclass
class Watched:
    kind: str  # "input" or "output"
    query: str  # what the user named (a case-insensitive substring)
    name: str  # the port it matched, as listed
    present: bool = True


class PortWatcher:
    """Reconnects ``live``'s named ports by name (see the module docstring)."""

    def __init__(
        self,
        live: Swaps,
        backend_name: str,
        input_query: str | None,
        output_query: str | None,
        input_label: str,
        output_label: str,
        log: Callable[[str], None],
        poll_s: float = POLL_S,
    ):
        from companion.midi.ports import get_backend

        self.live = live
        self.backend = get_backend(backend_name)
        self.label = backend_name
        self.log = log
        self.poll_s = poll_s
        self.watched: list[Watched] = []
        if input_query is not None:
            self.watched.append(Watched("input", input_query, input_label))
        if output_query is not None:
            self.watched.append(Watched("output", output_query, output_label))
        self._listers = None  # made on the watcher's thread: a failure there is not fatal
        self._failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="companion-ports", daemon=True)

    @staticmethod
    def _make_listers(backend_name: str):
        """One rtmidi client per direction for listing, made once: creating clients at 1 Hz
        would churn the MIDI system (a JACK client registration each time)."""
        rtmidi = load_rtmidi()

        api = getattr(rtmidi, f"API_{BACKENDS[backend_name]}")
        with quiet_stderr():
            return (rtmidi.MidiIn(rtapi=api, name="companion-watch"),
                    rtmidi.MidiOut(rtapi=api, name="companion-watch"))

    def start(self) -> None:
        if self.watched:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        for lister in self._listers or ():
            with contextlib.suppress(Exception):
                lister.delete()

    def _names(self) -> tuple[list[str], list[str]]:
        """(ports to listen to, ports to play to), as `companion ports` lists them."""
        if self._listers is None:
            self._listers = self._make_listers(self.label)
        lin, lout = self._listers
        with quiet_stderr():
            return port_names(lin.get_ports), port_names(lout.get_ports)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - the watcher must never take the process down
                if not self._failed:  # said once; it tries again every poll
                    self._failed = True
                    self.log(f"port watcher: {type(e).__name__}: {e}")

    def check(self) -> None:
        """One look at the port list: say what went, reopen what came back."""
        ins, outs = self._names()
        for w in self.watched:
            names = ins if w.kind == "input" else outs
            if w.present:
                if w.name not in names:
                    w.present = False
                    self.log(f"{w.kind} port {w.name} is gone; still running, and reconnecting "
                             f"when a port matching {w.query!r} comes back")
                continue
            try:
                name = match_port(w.query, names, w.kind, self.label)
            except PortError:
                continue  # not back yet (or ambiguous for now): look again later
            try:
                self._reopen(w.kind, name)
            except Exception as e:  # noqa: BLE001 - may vanish again while opening: retry later
                self.log(f"{w.kind} port {name} is back but could not be opened ({e})")
                continue
            w.name, w.present = name, True
            self.log(f"{w.kind} port {name} is back: reconnected")

    def _reopen(self, kind: str, name: str) -> None:
        with quiet_stderr():
            if kind == "input":
                old = self.live.swap_input(open_input(BACKENDS[self.label], name))
            else:
                old = self.live.swap_output(self.backend.open_output(name))
        with contextlib.suppress(Exception):
            old.close()
