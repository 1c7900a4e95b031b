"""Stalls on purpose: every CPU held by a SCHED_FIFO 99 busy loop for ``STALL_S`` every
``EVERY_S`` seconds, so that a JACK server running beside it has xruns (its graph stalls).

    python -m lab.stall STALL_S EVERY_S [--first S] [--for S]

Used to measure the clock follower through xruns (docs/reliability.md). Needs real-time
scheduling (root, or an rtprio limit of 99); the kernel's real-time throttling
(``/proc/sys/kernel/sched_rt_runtime_us``) still leaves the rest of each second to others.
Linux only. Stops after ``--for`` seconds, or on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def hog(cpu: int, stall_s: float, every_s: float, first_s: float, until: float) -> None:
    """On ``cpu`` at SCHED_FIFO 99: sleep ``first_s``, then spin ``stall_s`` every ``every_s``."""
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(99))
    time.sleep(first_s)
    while time.monotonic() < until:
        end = time.perf_counter() + stall_s
        while time.perf_counter() < end:
            pass
        time.sleep(max(0.0, every_s - stall_s))


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.stall", description=__doc__.split("\n")[0])
    p.add_argument("stall_s", type=float, help="seconds each stall lasts")
    p.add_argument("every_s", type=float, help="seconds from one stall to the next")
    p.add_argument("--first", type=float, default=0.0, help="seconds before the first stall")
    p.add_argument("--for", dest="for_s", type=float, default=600.0, help="seconds in all")
    a = p.parse_args(argv)
    if not 0 < a.stall_s <= 0.5 or a.every_s <= a.stall_s:
        print("lab.stall: STALL_S must be in (0, 0.5] and EVERY_S longer", file=sys.stderr)
        return 2
    if not hasattr(os, "sched_setscheduler"):
        print("lab.stall: needs Linux (sched_setscheduler)", file=sys.stderr)
        return 2
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(99))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except PermissionError:
        print("lab.stall: real-time scheduling refused (run as root, or raise the rtprio "
              "limit to 99)", file=sys.stderr)
        return 2
    until = time.monotonic() + a.first + a.for_s
    signal.signal(signal.SIGTERM, _interrupt)
    pids = []
    for cpu in sorted(os.sched_getaffinity(0)):
        pid = os.fork()
        if pid == 0:
            try:
                hog(cpu, a.stall_s, a.every_s, a.first, until)
            finally:
                os._exit(0)
        pids.append(pid)
    try:
        for pid in pids:
            os.waitpid(pid, 0)
    except KeyboardInterrupt:
        pass
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
