"""`companion live` over JACK when things end: SIGTERM in each state (listening, answering,
after the JACK server went away, while it hangs), and a JACK server that goes away (quits,
is killed) or hangs (is stopped) while it runs.

Each test starts a JACK server of its own (bench.jackserver.dummy_server) so that it can
kill it. Times are printed, never asserted tight: the limits below are generous for a
loaded two-core machine (the companion means 1 s for a signal, 2 s for a server gone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mido
import pytest
from support import ROOT, write_config

from bench.jackserver import JackdMissing, client_env, dummy_server
from companion.commands.live import EXIT_JACK_GONE
from companion.midi.jacklib import SETTLE_S, SILENT_S, close_in_turn

pytestmark = pytest.mark.jack

TEMPO = 120.0
BEAT = 60.0 / TEMPO
#: What the assertions wait for: far beyond what the companion means (1 s, 2 s).
LIMIT_S = 10.0
GONE = "the JACK server is gone"
HUNG = "JACK stopped moving MIDI"


def jackd_pid(server: str) -> int:
    """The pid of the jackd serving ``server`` (its ``-n NAME``), from the process table."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"jackd") and server.encode() in args:
            return int(entry.name)
    raise AssertionError(f"no jackd serving {server}")


@pytest.fixture
def server() -> Iterator[dict[str, str]]:
    """A JACK server private to the test, which it may kill (never the shared one)."""
    try:
        with dummy_server(1024, prefix="companion-faults") as env:
            yield env
    except JackdMissing as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))


class Companion:
    """`python -m companion live --backend jack` on ``env``'s server; its output lines."""

    def __init__(self, env: dict[str, str], config: Path):
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "companion", "live", "--backend", "jack", "--config",
             str(config)],
            cwd=ROOT, env=dict(env, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(60):
            self.proc.kill()
            pytest.fail("companion did not start:\n" + self.output())

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "listening on" in line:
                self.ready.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + LIMIT_S
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"no {text!r}:\n{self.output()}"
            time.sleep(0.01)

    def exits_within(self, since: float, what: str) -> int:
        """Its exit code, once it has exited (within LIMIT_S of ``since``); the time it took
        is printed."""
        try:
            code = self.proc.wait(timeout=max(0.0, since + LIMIT_S - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"companion still running {LIMIT_S:g} s after {what}:\n"
                        + self.output())
        print(f"companion exited {time.monotonic() - since:.3f} s after {what} "
              f"(code {code})")
        return code

    def terminate(self) -> int:
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return self.exits_within(t, "SIGTERM")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def config(tmp_path, model_pkg) -> Path:
    return write_config(
        tmp_path / "config.yaml", model_pkg,
        listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1.0},
        answer={"length": 16, "min_beats": 16, "max_beats": 16, "seed": 3},
        session={"folder": str(tmp_path / "sessions")})


def kill_server(env: dict[str, str], sig: int = signal.SIGKILL) -> float:
    """Send ``sig`` to the server's jackd (SIGKILL: it says goodbye to no one); when."""
    pid = jackd_pid(env["JACK_DEFAULT_SERVER"])
    t = time.monotonic()
    os.kill(pid, sig)
    return t


def test_sigterm_while_listening_ends_it(server, config):
    comp = Companion(server, config)
    try:
        assert comp.terminate() == 0, comp.output()
    finally:
        comp.kill()
    assert comp.lines[-1] == "companion: stopped", comp.output()


def test_sigterm_while_answering_ends_it(server, config):
    comp = Companion(server, config)
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
    try:
        with client_env(server):
            name = next(n for n in backend.get_output_names()
                        if n.startswith("companion") and n.endswith(":in"))
            to = backend.open_output(name)
        try:
            time.sleep(0.3)  # the connection settles
            for pitch in (60, 62, 64, 65):
                to.send(mido.Message("note_on", note=pitch, velocity=90))
                time.sleep(BEAT / 2)
                to.send(mido.Message("note_off", note=pitch))
            comp.wait_for("-> answer of")  # 16 beats: still playing when the signal comes
            assert comp.terminate() == 0, comp.output()
        finally:
            close_in_turn([to.close], SETTLE_S)
    finally:
        comp.kill()
    assert "every note off" in comp.output()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_jack_server_that_goes_away_is_said_once_and_ends_it(server, config, sig):
    """It quits (SIGTERM) or crashes (SIGKILL): one line, exit EXIT_JACK_GONE, no
    traceback."""
    comp = Companion(server, config)
    try:
        killed = kill_server(server, sig)
        code = comp.exits_within(killed, f"jackd got {signal.Signals(sig).name}")
    finally:
        comp.kill()
    assert code == EXIT_JACK_GONE, comp.output()
    assert sum(GONE in line for line in comp.lines) == 1, comp.output()
    assert comp.lines[-1] == "companion: stopped", comp.output()
    assert "Traceback" not in comp.output()


def test_a_jack_server_that_hangs_is_said_once_and_ends_it(server, config):
    """Stopped (SIGSTOP), the server is there but moves no MIDI: after SILENT_S without even
    the companion's own F7s, one line and exit EXIT_JACK_GONE."""
    comp = Companion(server, config)
    pid = jackd_pid(server["JACK_DEFAULT_SERVER"])
    try:
        stopped = kill_server(server, signal.SIGSTOP)
        code = comp.exits_within(stopped + SILENT_S, "SILENT_S after jackd was stopped")
    finally:
        os.kill(pid, signal.SIGCONT)
        comp.kill()
    assert code == EXIT_JACK_GONE, comp.output()
    assert sum(HUNG in line for line in comp.lines) == 1, comp.output()
    assert not any(GONE in line for line in comp.lines), comp.output()
    assert comp.lines[-1] == "companion: stopped", comp.output()


def test_sigterm_after_the_jack_server_went_away_ends_it(server, config):
    comp = Companion(server, config)
    try:
        kill_server(server)
        code = comp.terminate()
    finally:
        comp.kill()
    assert code in (0, EXIT_JACK_GONE), comp.output()
    assert comp.lines[-1] == "companion: stopped", comp.output()


def test_sigterm_while_the_jack_server_hangs_ends_it(server, config):
    """Stopped (SIGSTOP), before SILENT_S: closing a port would wait for the server for
    ever, so the companion says JACK moves no MIDI, leaves its ports unclosed, and ends as
    the signal asked (exit 0)."""
    comp = Companion(server, config)
    pid = jackd_pid(server["JACK_DEFAULT_SERVER"])
    try:
        kill_server(server, signal.SIGSTOP)
        time.sleep(0.5)
        code = comp.terminate()
    finally:
        os.kill(pid, signal.SIGCONT)
        comp.kill()
    assert code == 0, comp.output()
    assert sum("JACK moves no MIDI" in line for line in comp.lines) == 1, comp.output()
    assert comp.lines[-1] == "companion: stopped", comp.output()
