"""The companion's JACK workarounds, each for a behaviour of JACK2 or of RtMidi over it
(the investigations behind them: lab/README.md).

- The system's libjack: python-rtmidi's Linux wheels carry a libjack of their own (1.9.22 in
  python-rtmidi 1.5.8), while a client should speak its server's version (`load_rtmidi`).
- Ports closed one at a time: a JACK2 client that unregisters a port while its notification
  thread still walks its port list crashes (`close_in_turn`, SETTLE_S).
- A refused client asked again: a server still dropping a killed process's clients refuses
  new ones for a while (`make_client`, JACK_RETRY_S).
- A cut sysex ended by ourselves: RtMidi's JACK input holds a sysex open until an event that
  ends in F7 (SYSEX_END_S, SILENT_S, SYSEX_END_PORT; companion.midi.input).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")

#: The system's JACK client library, by its soname (jackd2's and PipeWire's alike).
SONAME = "libjack.so.0"
#: Seconds between closing two ports (a port's close and the next): JACK's graph moves on in
#: a period (at most 4096 frames at 48 kHz: 85 ms; 21 ms at 1024).
SETTLE_S = 0.1
#: Seconds a JACK server that refuses us a client is asked again: one still dropping the
#: clients of a killed process refuses every new one until it has (it tells each client of a
#: new one, and a dead one cannot answer), and one that just saw a client of the same name
#: close may too.
JACK_RETRY_S = 5.0
#: Over JACK, after this long without reading anything an input sends itself a lone F7 (the
#: end of any sysex RtMidi holds open): what comes after a cut sysex waits at most this long.
SYSEX_END_S = 0.05
#: Those lone F7s come back within a period or two while JACK moves MIDI. Sent, and nothing
#: at all read for this long: JACK has stopped (its server quit or hangs); no more are sent
#: (RtMidi's JACK output would fill its buffer, then spin holding the interpreter).
SILENT_S = 3.0
#: The name of the output port (a JACK client of its own) that sends them, connected only to
#: its input's own port; its client is named after the input's client: ``NAME-sysex-end``
#: (`sysex_end_client`), so that it never takes the ``NAME-01`` the output's client is named.
SYSEX_END_PORT = "sysex-end"


def sysex_end_client(client_name: str | None) -> str:
    """The JACK client name of the sysex-end port of an input whose client is
    ``client_name`` (None: RtMidi's default client name)."""
    return f"{client_name or 'RtMidi'}-{SYSEX_END_PORT}"


def output_client(client_name: str) -> str:
    """The JACK client name of the companion's output: each RtMidi port is a JACK client of
    its own and JACK names must differ, so the output's is ``NAME-01`` beside the input's
    ``NAME`` (what JACK would rename a second ``NAME`` to), whatever was opened first."""
    return f"{client_name}-01"

_system: ctypes.CDLL | None = None


def use_system_libjack() -> bool:
    """Load the system's libjack global, on Linux, if rtmidi is not imported yet; whether
    rtmidi's JACK calls go to it (False: no system libjack, rtmidi came first, not Linux).
    Loaded first and global, ``libjack.so.0`` is the one rtmidi's JACK calls bind to: Python
    loads an extension with RTLD_NOW, so the binding is made when rtmidi is imported. Where
    the system has none, the wheel's own serves."""
    global _system
    if _system is None and sys.platform.startswith("linux") and "rtmidi" not in sys.modules:
        try:
            _system = ctypes.CDLL(SONAME, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            return False
    return _system is not None


def load_rtmidi() -> ModuleType:
    """python-rtmidi, its JACK calls bound to the system's libjack (`use_system_libjack`):
    the companion's one way to it (and to mido's rtmidi backend, which imports it)."""
    use_system_libjack()
    import rtmidi

    return rtmidi


def make_client(make: Callable[[], T], api: str) -> T:
    """``make()`` (an rtmidi client, or mido's port that makes one); over JACK (``api``
    UNIX_JACK) asked again for ``JACK_RETRY_S`` while a server is there that refuses the
    client (rtmidi.SystemError), once where there is none or elsewhere."""
    rtmidi = load_rtmidi()
    deadline = time.monotonic() + (JACK_RETRY_S if api == "UNIX_JACK" else 0.0)
    while True:
        try:
            return make()
        except rtmidi.SystemError:
            if time.monotonic() >= deadline or not jack_server_there():
                raise
            time.sleep(0.1)


def jack_server_there() -> bool:
    """Whether the JACK server clients here would reach (``JACK_DEFAULT_SERVER``, else
    "default") has its socket: jackd2 listens on ``jack_NAME_UID_0`` in its folder (/dev/shm
    on Linux) while it runs. A socket is listened on while the kernel lists it bound
    (/proc/net/unix): the file a killed server leaves behind is not. Where that list cannot
    be read, the file says it; where neither is known (no such folder), True. Reads no
    more than that list: never a word with the server."""
    folder = Path("/dev/shm")
    if not folder.is_dir() or not hasattr(os, "getuid"):
        return True
    name = os.environ.get("JACK_DEFAULT_SERVER") or "default"
    path = folder / f"jack_{name}_{os.getuid()}_0"
    try:
        with open("/proc/net/unix", "rb") as f:
            bound = f.read()
    except OSError:
        return path.exists()
    return f" {path}\n".encode() in bound


def close_in_turn(closes: list[Callable[[], None]], settle_s: float) -> None:
    """Calls each of ``closes`` (a port's close), the next ``settle_s`` after the one before
    (SETTLE_S over JACK): a JACK2 client that unregisters a port while its notification
    thread still walks its port list for the graph change of the close before (a latency
    notice every client gets) crashes its process. One that raises does not stop the rest."""
    for n, close in enumerate(closes):
        if n:
            time.sleep(settle_s)
        with contextlib.suppress(Exception):
            close()
