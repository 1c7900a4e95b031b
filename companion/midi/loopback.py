"""The in-process MIDI loopback: ports that need no MIDI system (demo, bench, tests).

``LoopbackIn`` keeps rtmidi's callback contract: the reader sets ``callback``, and each
message the caller ``deliver``s is handed to it on the caller's thread, as a MIDI system's
thread would. ``LoopbackOut`` hands each message sent to it to ``receive``, or, without
one, keeps it with its send time for whoever reads ``messages()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import mido


class LoopbackIn:
    """An input port whose messages come from ``deliver`` (same callback as rtmidi's)."""

    def __init__(self) -> None:
        self.callback: Callable[[mido.Message], None] | None = None

    def deliver(self, msg: mido.Message) -> None:
        """Hand ``msg`` to the reader now; dropped when no reader is attached."""
        cb = self.callback
        if cb is not None:
            cb(msg)

    def close(self) -> None:
        self.callback = None


class LoopbackOut:
    """An output port: each message goes to ``receive``; without it, it is kept with the
    time of its send on ``now`` (thread-safe, in send order)."""

    def __init__(self, receive: Callable[[mido.Message], None] | None = None,
                 now: Callable[[], float] = time.perf_counter) -> None:
        self._receive = receive
        self._now = now
        self._got: list[tuple[float, mido.Message]] = []
        self._lock = threading.Lock()

    def send(self, msg: mido.Message) -> None:
        if self._receive is not None:
            self._receive(msg)
            return
        with self._lock:
            self._got.append((self._now(), msg))

    def messages(self) -> list[tuple[float, mido.Message]]:
        """A copy of what was kept so far: (send time, message)."""
        with self._lock:
            return list(self._got)

    def close(self) -> None:
        pass
