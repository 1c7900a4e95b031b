"""JACK's shared-memory registry (bench.jackregistry): servers killed with SIGKILL leave
their slots, segments and files; the server helper (bench.jackserver) frees them, and only
theirs, so killed runs never exhaust JACK's eight server slots. A run killed itself leaves
its server and clients running: the helper's next start stops them, and only them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from support import ROOT

from bench import jackregistry, jackserver

pytestmark = pytest.mark.jack

#: A killed run: starts a server with the helper, SIGKILLs its jackd, then itself, so the
#: helper never stops it; prints the server's name and jackd's pid first.
_KILLED_RUN = """
import os, signal
from bench import jackregistry, jackserver
with jackserver.dummy_server(256, prefix="registry-test") as env:
    name = env["JACK_DEFAULT_SERVER"]
    pid = next(s.pid for s in jackregistry.servers() if s.name == name)
    print(name, pid, flush=True)
    os.kill(pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
"""

#: A JACK client that stays until killed; says "open" once its port is there.
_CLIENT = ("import rtmidi, time\n"
           "port = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name='stays')\n"
           "port.open_virtual_port('out')\n"
           "print('open', flush=True)\n"
           "time.sleep(600)\n")

#: A run killed before its stop: starts a server with the helper and a client of it, then
#: SIGKILLs itself, leaving both running; prints the server's name, jackd's pid and the
#: client's first. The client holds none of the run's pipes (the test reads them to the end).
_ORPHANING_RUN = f"""
import os, signal, subprocess, sys
from bench import jackregistry, jackserver
with jackserver.dummy_server(256, prefix="registry-test") as env:
    name = env["JACK_DEFAULT_SERVER"]
    pid = next(s.pid for s in jackregistry.servers() if s.name == name)
    client = subprocess.Popen([sys.executable, "-c", {_CLIENT!r}], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert client.stdout.readline() == "open\\n"
    print(name, pid, client.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _client(env: dict[str, str]) -> subprocess.Popen:
    client = subprocess.Popen([sys.executable, "-c", _CLIENT], env=env, stdout=subprocess.PIPE,
                              text=True)
    assert client.stdout.readline() == "open\n"
    return client


@pytest.fixture
def jackd() -> str:
    path = shutil.which("jackd")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("jackd is not installed: the JACK tests cannot run (install jackd2)")
        pytest.skip("jackd is not installed (install jackd2 to run the JACK tests)")
    return path


def _files_of(name: str) -> list[str]:
    """The socket and semaphores of the server ``name`` in SHM_DIR."""
    uid = os.getuid()
    return sorted(f for f in os.listdir(jackregistry.SHM_DIR)
                  if f.startswith((f"jack_{name}_{uid}_", f"jack_sem.{uid}_{name}_")))


def _wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while jackregistry.alive(pid):
        assert time.monotonic() < deadline, f"jackd {pid} still exists after SIGKILL"
        time.sleep(0.05)


def _killed_run() -> tuple[str, int]:
    r = subprocess.run([sys.executable, "-c", _KILLED_RUN], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, f"the killed run failed: {r.stderr[-2000:]}"
    name, pid = r.stdout.split()
    _wait_gone(int(pid))
    return name, int(pid)


def test_killed_servers_never_exhaust_the_registry_and_a_foreign_one_is_untouched(jackd,
                                                                                   tmp_path):
    killed = [_killed_run() for _ in range(jackregistry.MAX_SERVERS)]
    # The last killed run left its slot, segments and files: what a killed pytest leaves.
    last_name, last_pid = killed[-1]
    stale = [s for s in jackregistry.servers() if s.name == last_name]
    assert [s.pid for s in stale] == [last_pid]
    assert any(pid == last_pid for pid, _ in jackregistry.segments())
    assert f"jack_{last_name}_{os.getuid()}_0" in os.listdir(jackregistry.SHM_DIR)

    foreign = f"foreign-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=foreign, JACK_NO_START_SERVER="1",
               JACK_NO_AUDIO_RESERVATION="1")
    with open(tmp_path / "foreign.log", "w") as log:
        proc = subprocess.Popen([jackd, "--no-realtime", "-n", foreign, "-d", "dummy",
                                 "-r", "48000", "-p", "256"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + jackserver.START_TIMEOUT_S
        while not jackserver.reachable(env):
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "foreign.log").read_text()[-2000:]
            time.sleep(0.1)
        foreign_files = _files_of(foreign)
        assert foreign_files

        started = []
        for _ in range(10):
            with jackserver.dummy_server(256, prefix="registry-test") as server:
                assert jackserver.reachable(server)
                started.append(server["JACK_DEFAULT_SERVER"])
        assert len(set(started)) == 10

        assert jackserver.reachable(env)
        assert [s.pid for s in jackregistry.servers() if s.name == foreign] == [proc.pid]
        assert set(foreign_files) <= set(_files_of(foreign))
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    names = {s.name for s in jackregistry.servers()}
    for name, pid in killed:
        assert name not in names
        assert _files_of(name) == []
        assert all(a != pid for a, _ in jackregistry.segments())
    for name in started:
        assert name not in names
        assert _files_of(name) == []


def test_a_server_deaf_to_sigterm_is_killed_and_leaves_nothing(jackd):
    with jackserver.dummy_server(256, prefix="registry-test", stop_timeout_s=0.5) as env:
        name = env["JACK_DEFAULT_SERVER"]
        (pid,) = [s.pid for s in jackregistry.servers() if s.name == name]
        assert _files_of(name)
        os.kill(pid, signal.SIGSTOP)  # SIGTERM stays pending: the helper must SIGKILL it
    assert not jackregistry.alive(pid)
    assert name not in {s.name for s in jackregistry.servers()}
    assert all(a != pid for a, _ in jackregistry.segments())
    assert _files_of(name) == []


def test_a_registry_of_another_layout_is_left_as_is(tmp_path):
    registry = tmp_path / jackregistry.REGISTRY_NAME
    data = bytes(range(256)) * 300
    registry.write_bytes(data)
    for read in (jackregistry.servers, jackregistry.clean):
        with pytest.raises(jackregistry.JackRegistryError, match="not the jackd2 POSIX regis"):
            read(shm_dir=tmp_path)
    assert registry.read_bytes() == data


def test_a_killed_runs_server_and_clients_are_stopped_and_a_live_runs_kept(jackd):
    r = subprocess.run([sys.executable, "-c", _ORPHANING_RUN], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, f"the killed run failed: {r.stderr[-2000:]}"
    name, *orphans = r.stdout.split()
    orphans = [int(pid) for pid in orphans]
    try:
        # What a killed pytest leaves: its server serving, its client still connected.
        assert all(jackregistry.alive(pid) for pid in orphans)
        left = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
        assert jackserver.reachable(left)

        with jackserver.dummy_server(256, prefix="registry-test") as live:
            assert not any(jackregistry.alive(pid) for pid in orphans)
            assert name not in {s.name for s in jackregistry.servers()}
            assert _files_of(name) == []
            # A live run's server and client: a later start of the same prefix keeps them.
            client = _client(live)
            try:
                with jackserver.dummy_server(256, prefix="registry-test") as later:
                    assert jackserver.reachable(later)
                    assert client.poll() is None
                    assert jackserver.reachable(live)
            finally:
                client.kill()
                client.wait()
    finally:
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
