"""Clocks: the engine and scheduler read time only through one of these (the Clock protocol,
companion.engine.protocols).

The live companion runs on the monotonic clock; `companion respond` and the unit tests
run the very same logic on a virtual clock that only moves when told to, so timing
decisions are exact and reproducible there.
"""

from __future__ import annotations

import os
import threading
import time

#: Sleep until this long before a deadline, then spin: OS sleeps overshoot by up to
#: ~1 ms on a loaded machine, a spin does not.
SPIN_S = 0.0015


class StopFlag:
    """A stop request that a signal handler may set: a plain attribute, no lock.

    ``threading.Event.set`` in a handler can deadlock: the handler runs in the main thread,
    which may at that moment hold the very lock ``set`` needs (inside ``Event.wait``).
    ``wait`` polls in short sleeps instead; it has Event's ``set/is_set/wait``.
    """

    POLL_S = 0.02

    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def is_set(self) -> bool:
        return self.value

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.value:
            left = self.POLL_S if end is None else min(self.POLL_S, end - time.monotonic())
            if left <= 0:
                break
            time.sleep(left)
        return self.value


#: Real-time round-robin priority of the threads that time the music (scheduler, engine):
#: above every ordinary process, below every JACK thread. jackd runs its clients' process
#: threads 5 below its own priority (``-P``, 10 by default: theirs are 5), and one that
#: waits for ours, spinning or running the model, misses its cycle and that cycle's MIDI.
RT_PRIORITY = 1


def realtime_thread(priority: int = RT_PRIORITY) -> bool:
    """Ask that the calling thread run before ordinary processes (SCHED_RR; Linux).

    On a busy machine an ordinary thread can wait milliseconds, even tens of them, for a
    core after its deadline; a real-time one preempts ordinary work at once. Needs root or
    an rtprio limit (the `audio` group that jackd2's install sets up); without, False, and
    nothing changes. The threads sleep or wait almost all the time, so they cannot hog a core.
    """
    if not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(priority))
    except (OSError, ValueError):
        return False
    return True


class RealClock:
    """Seconds on the monotonic clock, never set back by NTP or the user."""

    def __init__(self, spin_s: float = SPIN_S):
        self.spin_s = spin_s
        self.now = time.perf_counter  # CLOCK_MONOTONIC on Linux, the finest clock Python has

    def wait_until(self, deadline: float, cancel: StopFlag | threading.Event | None = None) -> bool:
        while True:
            left = deadline - self.now()
            if left <= 0:
                return True
            if cancel is not None and cancel.is_set():
                return False
            if left > self.spin_s:
                if cancel is not None:
                    if cancel.wait(left - self.spin_s):
                        return False
                else:
                    time.sleep(left - self.spin_s)
            else:
                time.sleep(0)  # spin, but let other threads have the GIL


class VirtualClock:
    """Time that moves only by ``advance``/``set``: waits return at once, having moved it."""

    def __init__(self, start: float = 0.0):
        self.t = float(start)

    def now(self) -> float:
        return self.t

    def set(self, t: float) -> None:
        self.t = max(self.t, float(t))

    def advance(self, dt: float) -> None:
        self.t += max(0.0, float(dt))

    def wait_until(self, deadline: float, cancel: StopFlag | threading.Event | None = None) -> bool:
        if cancel is not None and cancel.is_set():
            return False
        self.set(deadline)
        return True
