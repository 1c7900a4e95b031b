"""Closing JACK ports one right after another: how often the process crashes.

    python -m lab.closerace [--settle 0.0] [--processes 40] [--rounds 10] [--libjack wheel]

On a private server at 1024 frames (bench.jackserver), beside a ``jack_midi_clock`` and a
``jack_midi_dump``, each of ``--processes`` processes ``--rounds`` times opens an rtmidi JACK
output (connected to the dump) and input (fed by the clock), sends and reads a little, then
closes the output and, ``--settle`` seconds later, the input's port. JACK2's client library
walks a client's port list in its notification thread for the latency notice every graph
change sends; a port unregistered meanwhile crashes the process (SIGSEGV in
``JackClient::HandleLatencyCallback``). Prints how many processes ended by a signal.
rtmidi speaks through the system's libjack, as the companion's does (companion.midi.jacklib);
``--libjack wheel`` through the one python-rtmidi's wheel carries.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time

from bench.jackserver import dummy_server

SYSTEM_LIBJACK = "from companion.midi.jacklib import load_rtmidi\nload_rtmidi()\n"
CHILD = """
import subprocess, sys, time
import rtmidi
rounds, settle = int(sys.argv[1]), float(sys.argv[2])
for r in range(rounds):
    o = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name=f"o{r}")
    o.open_virtual_port("out")
    i = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name=f"i{r}")
    i.open_virtual_port("in")
    subprocess.run(["jack_connect", f"o{r}:out", "dump:input"], capture_output=True)
    subprocess.run(["jack_connect", "jack_midi_clock:mclk_out", f"i{r}:in"], capture_output=True)
    for k in range(20):
        o.send_message([0x90, 60, 90])
        time.sleep(0.005)
        while i.get_message():
            pass
    o.close_port()
    o.delete()
    time.sleep(settle)
    i.close_port()
    while i.get_message():
        pass
    time.sleep(0.1)
    i.delete()
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.closerace",
                                description=__doc__.split("\n")[0])
    p.add_argument("--settle", type=float, default=0.0, help="seconds between the closes")
    p.add_argument("--processes", type=int, default=40)
    p.add_argument("--rounds", type=int, default=10, help="opens and closes per process")
    p.add_argument("--libjack", choices=("system", "wheel"), default="system",
                   help="the libjack rtmidi speaks through")
    a = p.parse_args(argv)
    with dummy_server(1024, prefix="companion-closerace") as env:
        others = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                  for cmd in (["jack_midi_dump", "-a", "dump"],
                              ["jack_midi_clock", "-b", "100", "-B", "-P"])]
        try:
            time.sleep(1.0)  # both are up
            subprocess.run(["jack_transport"], input="play\nquit\n", env=env, text=True,
                           capture_output=True, timeout=10)
            ends: collections.Counter[int] = collections.Counter()
            for _ in range(a.processes):
                child = (SYSTEM_LIBJACK if a.libjack == "system" else "") + CHILD
                r = subprocess.run([sys.executable, "-c", child, str(a.rounds), str(a.settle)],
                                   env=env, capture_output=True, timeout=120)
                ends[r.returncode] += 1
        finally:
            for o in others:
                o.terminate()
                o.wait()
            time.sleep(0.1)
    crashed = sum(n for code, n in ends.items() if code < 0)
    print(f"{a.libjack} libjack, settle {a.settle} s: {a.processes} processes of {a.rounds} "
          f"rounds, {crashed} crashed ({dict(ends)} by exit status)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
