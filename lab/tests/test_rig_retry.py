"""The clock tests' rig set up again on a fresh server when JACK2's synchronous graph
stalls while it is set up (tests/support.py `clock_rig`; JACK2 loses a wake-up: jack2#156,
docs/reliability.md): a client made to hang stalls it on purpose.

Run from the repository root (``python -m pytest lab/tests``): it takes the rig from the
tests' helpers (tests/support.py) and `companion live` with the shipped model."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import (
    ROOT,
    clock_rig,
    jack_ports,
    jack_server_or_skip,
    jack_tools,
    write_config,
)

pytestmark = [pytest.mark.jack, pytest.mark.jack_sync]


#: A JACK client (libjack through ctypes) whose process callback, once the file named by its
#: argument exists, never returns: its cycles never finish, while its notices are answered
#: (libjack's own thread), as in JACK2's lost wake-up. Says "active" once in the graph.
_HANGING_CLIENT = """
import ctypes, os, sys, time
jack = ctypes.CDLL("libjack.so.0")
jack.jack_client_open.restype = ctypes.c_void_p
jack.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
client = ctypes.c_void_p(jack.jack_client_open(b"hang", 1, None))
assert client.value, "no JACK server"
PROCESS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p)
def process(nframes, arg):
    while os.path.exists(sys.argv[1]):
        time.sleep(0.1)
    return 0
callback = PROCESS(process)
jack.jack_set_process_callback.argtypes = [ctypes.c_void_p, PROCESS, ctypes.c_void_p]
jack.jack_set_process_callback(client, callback, None)
assert jack.jack_activate(client) == 0
print("active", flush=True)
time.sleep(600)
"""


def test_a_rig_whose_graph_stalls_is_set_up_again_on_a_fresh_server(tmp_path, capsys):
    """A client whose cycles stop finishing once the judge's port is there stalls the
    synchronous graph as JACK2's lost wake-up does: `clock_rig` says so, keeps the clients'
    stacks and sets the rig up on a fresh server, where the companion hears the performer.
    The hanging client breaks its server: the test starts a server of its own."""
    jack_tools()
    with jack_server_or_skip(256, tmp_path / "jackd.log", sync=True) as jack_server:
        _stall_a_rig(jack_server, tmp_path)
    out = capsys.readouterr().out
    assert "stalled" in out and "set up again on a fresh server" in out, out
    stacks = tmp_path / "stacks-1.txt"
    assert stacks.exists() and "== judge" in stacks.read_text(), out


def _stall_a_rig(jack_server: dict, tmp_path: Path) -> None:
    """A rig on ``jack_server`` with the hanging client armed by the judge's port: it must
    come up on a fresh server where the companion hears a call of 3 notes."""
    armed = tmp_path / "hang"
    hang = subprocess.Popen([sys.executable, "-c", _HANGING_CLIENT, str(armed)],
                            env=jack_server, stdout=subprocess.PIPE, text=True)
    try:
        assert hang.stdout.readline() == "active\n"
        threading.Thread(target=_when_there, args=(jack_server, "judge", armed.touch),
                         daemon=True).start()
        cfg = write_config(tmp_path / "config.yaml", ROOT / "models" / "default",
                           session={"enabled": False},
                           listen={"phrase_end_beats": 1.0})
        with clock_rig(jack_server, 256, tmp_path, cfg, ["-b", "100"]) as rig:
            assert rig.env["JACK_DEFAULT_SERVER"] != jack_server["JACK_DEFAULT_SERVER"]
            for p in (60, 64, 67):
                rig.performer.send_message([0x90, p, 80])
                time.sleep(0.2)
                rig.performer.send_message([0x80, p, 0])
            deadline = time.monotonic() + 10
            while not any("call of 3 notes" in ln for ln in rig.comp.lines):
                assert time.monotonic() < deadline, "\n".join(rig.comp.lines)
                time.sleep(0.1)
    finally:
        armed.unlink(missing_ok=True)
        hang.kill()
        hang.wait()


def _when_there(env: dict, prefix: str, then: Callable[[], object]) -> None:
    """``then()`` as soon as a JACK port named ``prefix...`` is there."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(n.startswith(prefix) for n in jack_ports(env) or []):
            then()
            return
        time.sleep(0.05)
