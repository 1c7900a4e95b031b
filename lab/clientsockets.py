"""Two JACK servers, clients of one name on each: how often a client's open fails.

    python -m lab.clientsockets [--seconds 25] [--private]

Server A: a process opens an rtmidi input and output, then is killed (SIGKILL), over and
over. Server B: this process opens and closes an rtmidi input (the same default client name,
``RtMidiIn Client``) as fast as it can. JACK2 names a client's notification socket
``/dev/shm/jack_CLIENT_UID_0``, without its server's name, so the two servers' clients of one
name take each other's sockets: B logs "Cannot connect to client name = ..." and the open
fails ("JACK server not running?"). ``--private`` runs B and its clients in a mount
namespace with its own /dev/shm (root only), as tests/conftest.py runs each test worker.
Prints the opens and how many failed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

from bench.jackserver import dummy_server, private_shm

SYSTEM_LIBJACK = "from companion.midi.jacklib import load_rtmidi\nrtmidi = load_rtmidi()\n"
KILLED = SYSTEM_LIBJACK + """import time
m = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK); m.open_virtual_port("x")
o = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK); o.open_virtual_port("y")
print("up", flush=True)
time.sleep(30)
"""


def kill_clients(env: dict[str, str], seconds: float) -> int:
    """Clients on the server of ``env`` started and SIGKILLed for ``seconds``; how many
    came up."""
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        p = subprocess.Popen([sys.executable, "-c", KILLED], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        n += p.stdout.readline() == b"up\n"
        time.sleep(0.2)
        p.send_signal(signal.SIGKILL)
        p.wait()
        time.sleep(0.1)
    return n


def open_clients(seconds: float) -> tuple[int, int]:
    """Inputs opened and closed on this process's server for ``seconds``: (opens, failed)."""
    from companion.midi.jacklib import load_rtmidi

    rtmidi = load_rtmidi()
    n = failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            m = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK)
            m.open_virtual_port("x")
            m.close_port()
            m.delete()
        except rtmidi.SystemError:
            failed += 1
        n += 1
    return n, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--private", action="store_true",
                    help="server B and its clients with a /dev/shm of their own (root)")
    args = ap.parse_args(argv)
    with dummy_server(256, prefix="lab-a") as env_a:
        # started first: a thread keeps the mount namespace it had, and so its processes
        killed: list[int] = []
        killer = threading.Thread(
            target=lambda: killed.append(kill_clients(env_a, args.seconds + 2)))
        killer.start()
        if args.private:
            why = private_shm()
            if why is not None:
                print(f"--private: no mount namespace ({why})")
                return 2
        with dummy_server(256, prefix="lab-b") as env_b:
            os.environ.update(JACK_DEFAULT_SERVER=env_b["JACK_DEFAULT_SERVER"],
                              JACK_NO_START_SERVER="1")
            opens, failed = open_clients(args.seconds)
            killer.join()
    print(f"{opens} opens on B, {failed} failed ({'private' if args.private else 'shared'} "
          f"/dev/shm) while {killed[0]} clients of A were killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
