"""A private JACK server on the dummy driver (no sound card), for the bench and the tests.

``dummy_server(frames)`` starts ``jackd -R -n NAME -d dummy -r 48000 -p FRAMES`` (real-time:
its clients' process threads run SCHED_FIFO where the machine allows it, else jackd goes on
without; ``realtime=False`` asks for ``--no-realtime``; ``sync=True`` for ``-S``, below)
under a name of its own, waits
until a client can reach it (``jack_lsp`` where installed, else an rtmidi client), yields
the environment in which clients find it, and stops it at the end (SIGTERM, then SIGKILL
after STOP_TIMEOUT_S). It leaves nothing behind: before a
start it frees what servers whose process is gone left in JACK's shared-memory registry, and
after a stop what its own server left (bench.jackregistry). A run killed before its stop
leaves its jackd and that server's clients running: a start also stops those (`stop_orphans`)
first. JACK moves MIDI once a period:
FRAMES / 48 kHz. Without real-time scheduling, a client descheduled past its cycle on a busy
machine is an xrun, and JACK drops that cycle's MIDI.

JACK2 runs its graph asynchronously by default: a cycle starts on time whether or not every
client finished the one before, and a client that did not (its thread not yet run, as when
the machine stalls) misses that cycle's MIDI. Synchronous (``-S``), a cycle waits for every
client (up to ten times the client timeout ``-t``), so a stall delays the graph and drops
nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

from bench import jackregistry

RATE = 48000
#: The environment key that names the server's log (its xruns), for failure messages.
LOG_KEY = "JACKD_LOG"
#: The environment key that says how the server's threads are scheduled: SCHED_FIFO where
#: real-time was asked for and granted, else SCHED_OTHER.
SCHED_KEY = "JACKD_SCHED"
#: The environment key that says whether the graph runs synchronous (``-S``) or not.
MODE_KEY = "JACKD_MODE"
#: A synchronous server's client timeout (``-t``): its cycle waits up to ten times this
#: long (1 s) for a late client; without ``-t`` it is ten times two periods (27 ms at 64
#: frames), shorter than a stall of the machine.
SYNC_TIMEOUT_MS = 100
#: What a client needs to find this server and no other (and never to start one).
CLIENT_KEYS = ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0

_PROBE = (
    "import rtmidi, sys\n"
    "try:\n    rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK).delete()\n"
    "except rtmidi.SystemError:\n    sys.exit(1)\n"
)


class JackdError(RuntimeError):
    """jackd did not start (the message ends with its log), or is not installed."""


class JackdMissing(JackdError):
    """No ``jackd`` on PATH."""


def reachable(env: dict[str, str]) -> bool:
    """Whether a client in ``env`` reaches a JACK server (jack_lsp, else an rtmidi client)."""
    cmd = ["jack_lsp"] if shutil.which("jack_lsp") else [sys.executable, "-c", _PROBE]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def scheduling(pid: int) -> str:
    """SCHED_FIFO if any thread of process ``pid`` runs under it (jackd's real-time threads),
    else SCHED_OTHER."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return "SCHED_OTHER"
    for tid in tids:
        with contextlib.suppress(OSError):
            if os.sched_getscheduler(tid) == os.SCHED_FIFO:
                return "SCHED_FIFO"
    return "SCHED_OTHER"


def period_text(frames: int) -> str:
    return f"{RATE // 1000} kHz, period {frames} frames ({frames * 1000 / RATE:.2f} ms)"


@contextlib.contextmanager
def dummy_server(frames: int = 256, log: Path | None = None,
                 prefix: str = "companion",
                 stop_timeout_s: float = STOP_TIMEOUT_S,
                 realtime: bool = True, sync: bool = False) -> Iterator[dict[str, str]]:
    """A private jackd; yields ``os.environ`` plus JACK_DEFAULT_SERVER (its unique name),
    JACK_NO_START_SERVER=1, JACK_NO_AUDIO_RESERVATION=1, JACKD_LOG (``log``, else a
    temporary file), JACKD_SCHED (`scheduling`: what ``realtime`` got) and JACKD_MODE
    ("synchronous" with ``sync``, else "asynchronous"); stops it with
    SIGTERM, then SIGKILL after ``stop_timeout_s``.
    Raises JackdMissing without jackd, JackdError when it does not come up
    within START_TIMEOUT_S."""
    jackd = shutil.which("jackd")
    if jackd is None:
        raise JackdMissing("jackd is not installed (install jackd2)")
    with contextlib.ExitStack() as stack:
        if log is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix))
            log = Path(folder) / "jackd.log"
        name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1",
                   JACK_NO_AUDIO_RESERVATION="1", **{LOG_KEY: str(log)})
        out = stack.enter_context(open(log, "w"))  # noqa: SIM115 - closed by the stack
        stop_orphans(prefix)
        _clean_registry()
        stack.callback(_clean_registry, name)
        proc = subprocess.Popen(
            [jackd, "-R" if realtime else "--no-realtime",
             *(["-S", "-t", str(SYNC_TIMEOUT_MS)] if sync else []),
             "-n", name, "-d", "dummy", "-r", str(RATE), "-p", str(frames)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        stack.callback(_stop, proc, stop_timeout_s)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not reachable(env):
            if proc.poll() is not None or time.monotonic() > deadline:
                out.flush()
                raise JackdError(f"jackd did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        env[SCHED_KEY] = scheduling(proc.pid)
        env[MODE_KEY] = "synchronous" if sync else "asynchronous"
        yield env


@contextlib.contextmanager
def client_env(env: dict[str, str]) -> Iterator[None]:
    """This process's own JACK clients find the server of ``env`` (CLIENT_KEYS), until the
    end of the block."""
    old = {k: os.environ.get(k) for k in CLIENT_KEYS}
    os.environ.update({k: env[k] for k in CLIENT_KEYS if k in env})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: unshare(2) and mount(2) flags: a mount namespace; mounts private to it.
CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x00020000, 0x4000, 1 << 18


def private_shm() -> str | None:
    """This thread (and what it starts from now on) in a mount namespace of its own with an
    empty tmpfs on /dev/shm: its JACK servers and clients share no socket, semaphore or
    registry with another process's. JACK2 names a client's socket /dev/shm/jack_CLIENT_UID_0,
    without its server's name, so same-named clients of two servers take each other's
    sockets (lab/README.md). Returns why not where it cannot be had (not root, not Linux)."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    libc = ctypes.CDLL(None, use_errno=True)
    for call in (lambda: libc.unshare(CLONE_NEWNS),
                 lambda: libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None),
                 lambda: libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", 0, b"mode=1777")):
        if call() != 0:
            return os.strerror(ctypes.get_errno())
    return None


def stop_orphans(prefix: str, timeout_s: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGKILL each process of this user whose environment names (JACK_DEFAULT_SERVER) a
    server of ``prefix`` whose starter is gone: the jackd and its clients that a run killed
    before its stop left running. A server's name holds its starter's pid (`dummy_server`),
    so a live run's servers and clients are never touched. Returns the pids, once gone (a
    warning names those still there after ``timeout_s``)."""
    if not os.path.isdir("/proc"):  # no process table to read (not Linux)
        return []
    name = re.compile(rb"JACK_DEFAULT_SERVER=" + re.escape(prefix.encode())
                      + rb"-(\d+)-[0-9a-f]{8}")
    uid, found = os.getuid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        starters = [int(m.group(1)) for m in map(name.fullmatch, environ) if m]
        if starters and not jackregistry.alive(starters[0]):
            found.append(int(entry.name))
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    left = found
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in left if jackregistry.alive(pid)]
    if left:
        warnings.warn(f"processes of killed JACK runs still there after SIGKILL: {left}",
                      stacklevel=2)
    return found


def _clean_registry(*names: str) -> None:
    """Free what dead servers, and the servers ``names``, left in JACK's registry; a registry
    this cannot read is left as is, with a warning."""
    try:
        jackregistry.clean(names=names)
    except jackregistry.JackRegistryError as e:
        warnings.warn(str(e), stacklevel=2)


def _stop(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not gone within ``timeout_s``; reaped either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
