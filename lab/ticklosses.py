"""Clock ticks lost by JACK listeners while the machine stalls, JACK2's asynchronous graph
beside its synchronous one (``jackd -S``), one run each, side by side:

    python -m lab.ticklosses [--frames 256] [--seconds 30] [--listeners 3]

On a private server (bench.jackserver) a 100 BPM ``jack_midi_clock`` (a tick every 1,200
frames at 48 kHz) feeds ``--listeners`` ``jack_midi_dump -a`` clients, while ``lab.stall``
holds every CPU for 80 ms every 0.5 s. A listener lost k-1 ticks where two ticks it heard lie
k ticks apart in frames (ticks counted from the clock's Start); a tick every listener lost
may not have been sent (the clock's own cycle missed); two under half an interval apart are
one tick heard twice. Asynchronous, a listener whose thread had not run when its cycle ended
misses that cycle's MIDI; synchronous, the cycle waits for it. Needs jackd2,
jack-midi-clock and real-time scheduling (for lab.stall). Linux only.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.jackserver import MODE_KEY, RATE, dummy_server
from bench.jitter import connect

CLOCK_BPM = 100
TICK_FRAMES = RATE * 60 // CLOCK_BPM // 24
STALL_S, EVERY_S = 0.08, 0.5


def tick_frames(dump: Path) -> list[int]:
    """The frames of the clock ticks (F8) after the first Start (FA) in a ``jack_midi_dump
    -a`` log. Each listener counts frames from its own start: ticks are compared by their
    count from Start."""
    out: list[int] | None = None
    for line in dump.read_text().splitlines():
        m = re.match(r"\s*(\d+):\s(f8|fa)(?:\s|$)", line)
        if m and m.group(2) == "fa" and out is None:
            out = []
        elif m and out is not None:
            out.append(int(m.group(1)))
    return out or []


def missing(frames: list[int]) -> set[int]:
    """The counts (from Start, the first tick 0) of the ticks missing between those heard at
    ``frames``: a gap of k tick intervals lacks k-1; one under half an interval is a tick
    heard twice (`doubled`), which counts once."""
    out, n = set(), 0
    for a, b in zip(frames, frames[1:], strict=False):
        k = round((b - a) / TICK_FRAMES)
        out.update(range(n + 1, n + k))
        n += k
    return out


def doubled(frames: list[int]) -> int:
    """Ticks heard twice: two under half an interval apart."""
    return sum(1 for a, b in zip(frames, frames[1:], strict=False) if b - a < TICK_FRAMES / 2)


def run(frames: int, seconds: float, listeners: int, sync: bool) -> str:
    """One server: a line saying each listener's ticks heard and lost. Raises RuntimeError
    where lab.stall is refused real-time scheduling, JackdError where jackd fails."""
    with tempfile.TemporaryDirectory(prefix="ticklosses") as folder, \
            dummy_server(frames, prefix="companion-ticklosses", sync=sync) as env, \
            contextlib.ExitStack() as st:
        dumps = [Path(folder) / f"listener{i}.txt" for i in range(listeners)]
        for i, dump in enumerate(dumps):
            out = st.enter_context(open(dump, "w"))  # noqa: SIM115 - closed by the stack
            p = subprocess.Popen(["jack_midi_dump", "-a", f"listener{i}"], env=env,
                                 stdout=out, stderr=subprocess.DEVNULL)
            st.callback(p.wait)
            st.callback(p.terminate)
        clock = subprocess.Popen(["jack_midi_clock", "-b", str(CLOCK_BPM), "-B", "-P"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        st.callback(clock.wait)
        st.callback(clock.terminate)
        for i in range(listeners):
            connect(env, "jack_midi_clock:mclk_out", f"listener{i}:input")
        subprocess.run(["jack_transport"], input="play\nquit\n", env=env, text=True,
                       capture_output=True, timeout=10, check=True)
        time.sleep(1.0)
        stall = subprocess.run([sys.executable, "-m", "lab.stall", str(STALL_S),
                                str(EVERY_S), "--for", str(seconds)],
                               capture_output=True, text=True)
        if stall.returncode:
            raise RuntimeError(stall.stderr.strip())
        time.sleep(0.5)
        mode = env[MODE_KEY]
        st.close()
        heard = [tick_frames(d) for d in dumps]
    gone = [missing(h) for h in heard]
    everyone = set.intersection(*gone)
    return (f"{frames} frames, {mode}: " + ", ".join(
        f"listener{i} {len(h)} ticks heard, {len(g)} lost, {doubled(h)} twice" for i, (h, g) in
        enumerate(zip(heard, gone, strict=True)))
        + f"; {len(everyone)} of them lost by every listener (not sent, or dropped for all)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.ticklosses",
                                description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=256, help="the period (default 256)")
    p.add_argument("--seconds", type=float, default=30.0, help="of stalls (default 30)")
    p.add_argument("--listeners", type=int, default=3, help="jack_midi_dump clients (3)")
    a = p.parse_args(argv)
    absent = [t for t in ("jackd", "jack_midi_clock", "jack_midi_dump", "jack_transport")
              if shutil.which(t) is None]
    if absent:
        print(f"lab.ticklosses: {', '.join(absent)} not installed", file=sys.stderr)
        return 2
    try:
        for sync in (False, True):
            print(run(a.frames, a.seconds, a.listeners, sync), flush=True)
    except (RuntimeError, OSError) as e:  # lab.stall refused, or jackd did not start
        print(f"lab.ticklosses: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
