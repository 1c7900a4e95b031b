"""How often a synchronous JACK2 graph stalls while the clock tests' rig is set up:

    python -m lab.graphstall [--runs 150] [--frames 256] [--model models/default]

Each run, on a fresh private synchronous server (bench.jackserver: ``jackd -R -S -t 100``):
`companion live` until it listens; then ``jack_midi_dump -a judge``, ``jack_transport`` and a
100 BPM ``jack_midi_clock`` started at once; the clock connected to the judge and the
companion's input, the companion's output to the judge, a python-rtmidi output of this
process (the performer) to the companion's input; held 1 s. A run whose server logged a
cycle that waited out its whole timeout for a client that never finished it (jackd:
"SuspendRefNum error") stalled. Prints how many did, and keeps their server logs. Needs
jackd2 and jack-midi-clock. Linux only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.clockrig import STALLED, set_up_clients
from bench.jackserver import LOG_KEY, dummy_server
from bench.process import LiveProcess

ROOT = Path(__file__).resolve().parents[1]


def run(frames: int, model: Path, keep: Path, folder: Path) -> bool:
    """One rig on a fresh server; whether its graph stalled (its log then kept in ``keep``)."""
    cfg = folder / "config.yaml"
    cfg.write_text(json.dumps({"model": str(model), "midi": {"backend": "jack"},
                               "session": {"enabled": False}}))
    with dummy_server(frames, log=folder / "jackd.log", prefix="companion-graphstall",
                      sync=True) as env, contextlib.ExitStack() as st:
        comp = LiveProcess(cfg, dict(env, PYTHONPATH=str(ROOT)), folder)
        st.callback(comp.stop)
        comp.wait_ready()
        set_up_clients(st, env, folder / "dump.txt", ["-b", "100", "-B", "-P"], True)
        time.sleep(1.0)
        log = Path(env[LOG_KEY])
        stalled = STALLED in log.read_text()
        if stalled:
            shutil.copy(log, keep / f"stalled-{time.strftime('%H%M%S')}-{os.getpid()}.log")
    return stalled


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.graphstall",
                                description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=150)
    p.add_argument("--frames", type=int, default=256, help="the period (default 256)")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    p.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the logs of stalled runs go (default: the temp folder)")
    a = p.parse_args(argv)
    absent = [t for t in ("jackd", "jack_midi_clock", "jack_midi_dump", "jack_transport",
                          "jack_lsp", "jack_connect") if shutil.which(t) is None]
    if absent:
        print(f"lab.graphstall: {', '.join(absent)} not installed", file=sys.stderr)
        return 2
    stalled = 0
    try:
        for _ in range(a.runs):
            with tempfile.TemporaryDirectory(prefix="graphstall") as folder:
                stalled += run(a.frames, a.model.resolve(), a.keep, Path(folder))
    except (RuntimeError, OSError) as e:  # jackd or the companion did not start
        print(f"lab.graphstall: {e}", file=sys.stderr)
        return 2
    print(f"{a.frames} frames, synchronous: {stalled} of {a.runs} rigs stalled "
          f"(their server logs in {a.keep})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
