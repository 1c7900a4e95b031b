"""A real `companion live` process: ``cold_start_s``, ``rss_mb``, ``jack_roundtrip_ms``.

The process runs against the JACK server already running, else a private one on the dummy
driver (bench.jackserver) when jackd is installed; Linux only (/proc). Cold start is from
process start to its "listening on" line; peak memory is its VmHWM after notes in and an
answer out; the round trip goes from a JACK client of the bench through the companion's
passthrough and back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mido
import numpy as np

from bench.figures import Plan, Result, log, next_pitch, stats
from bench.jackserver import (
    JackdError,
    JackdMissing,
    client_env,
    dummy_server,
    period_text,
    reachable,
)

#: The private server's period, frames at 48 kHz (1.33 ms): small, so that the round trip
#: shows the companion rather than JACK's cycle.
PERIOD = 64


@contextlib.contextmanager
def _jack() -> Iterator[tuple[dict[str, str], str, bool]]:
    """(environment, what the server is, whether it is the bench's own): the running JACK
    server if a client reaches one, else a private one. Raises JackdError when neither."""
    env = dict(os.environ, JACK_NO_START_SERVER="1")
    if reachable(env):
        name = os.environ.get("JACK_DEFAULT_SERVER", "default")
        yield env, f"the running JACK server ({name})", False
        return
    with dummy_server(PERIOD, prefix="companion-bench") as env:
        yield env, f"a private jackd on the dummy driver, {period_text(PERIOD)}", True


class LiveProcess:
    """`companion live` as a subprocess; ``ready`` is when it said it listens (ports open,
    model loaded), on the monotonic clock, from ``started``."""

    READY = "companion: listening on"

    def __init__(self, config_path: Path, env: dict[str, str], cwd: Path):
        self.lines: list[str] = []
        self.ready_at: float | None = None
        self._ready = threading.Event()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "companion", "live", "--config", str(config_path)],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.ready_at is None and line.startswith(self.READY):
                self.ready_at = time.perf_counter()
                self._ready.set()
            self.lines.append(line.rstrip())
        self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> float:
        if not self._ready.wait(timeout) or self.ready_at is None:
            self.stop()
            tail = " | ".join(self.lines[-3:]) or "no output"
            raise RuntimeError(f"companion live did not get ready ({tail})")
        return self.ready_at - self.started

    def status(self, key: str) -> float | None:
        """A /proc/PID/status figure in kB (VmHWM: peak resident memory)."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return float(line.split()[1])
        except OSError:
            return None
        return None

    def loaded(self, needle: str) -> bool:
        try:
            return needle in Path(f"/proc/{self.proc.pid}/maps").read_text()
        except OSError:
            return False

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _jack_roundtrip(client: str, notes: int, rng: np.random.Generator) -> tuple[list[float], int]:
    """Notes from a JACK client of the bench into ``client:in``, timed until the passthrough
    note comes back from ``client:out``; then the held key is released and an answer awaited
    (so that the peak memory covers answering). Returns (round trips in s, answer notes)."""
    from companion.midi.input import open_input
    from companion.midi.jacklib import load_rtmidi

    rtmidi = load_rtmidi()

    got: list[tuple[float, list[int]]] = []
    arrived = threading.Event()

    def on_msg(msg: mido.Message) -> None:
        got.append((time.perf_counter(), msg.bytes()))
        arrived.set()

    to = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "bench")
    frm = None
    try:
        outs = to.get_ports()
        lister = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "bench-list")
        ins = lister.get_ports()
        lister.delete()
        target = [i for i, n in enumerate(outs) if n == f"{client}:in"]
        source = [n for n in ins if re.match(rf"^{re.escape(client)}(-\d+)?:out$", n)]
        if not target or not source:
            raise RuntimeError(f"no JACK ports {client}:in / {client}:out (inputs {ins})")
        to.open_port(target[0], "to-companion")
        # polled, as the companion reads its input (companion.midi.input): the trip includes
        # up to midi_in.POLL_S on this side too
        frm = open_input("UNIX_JACK", source[-1], callback=on_msg)
        time.sleep(0.3)
        trips = []
        to.send_message([0x90, 30, 70])  # held: no phrase ends while the probes play
        time.sleep(0.05)
        pitch = 64
        for k in range(notes):
            pitch = next_pitch(pitch, rng)
            vel = 20 + k % 100
            n0 = len(got)
            arrived.clear()
            t0 = time.perf_counter()
            to.send_message([0x90, pitch, vel])
            deadline = t0 + 0.5
            hit = None
            while hit is None and time.perf_counter() < deadline:
                arrived.wait(0.05)
                arrived.clear()
                for t, m in got[n0:]:
                    if len(m) == 3 and m[0] & 0xF0 == 0x90 and m[1] == pitch and m[2] == vel:
                        hit = t
                        break
            if hit is not None:
                trips.append(hit - t0)
            time.sleep(0.003)
            to.send_message([0x80, pitch, 0])
            time.sleep(float(rng.uniform(0.005, 0.015)))
        n0 = len(got)
        to.send_message([0x80, 30, 0])
        deadline = time.perf_counter() + 5.0
        answer = 0
        while time.perf_counter() < deadline and answer < 2:
            time.sleep(0.05)
            answer = sum(1 for _, m in got[n0:] if m[0] & 0xF0 == 0x90 and m[2] > 0)
        return trips, answer
    finally:
        if frm is not None:
            frm.close()
        with contextlib.suppress(Exception):
            to.close_port()
        with contextlib.suppress(Exception):
            to.delete()


def measure_process(model_dir: Path, plan: Plan, res: Result, quiet: bool) -> None:
    """``cold_start_s``, ``rss_mb``, ``jack_roundtrip_ms`` of real `companion live` processes."""
    keys = ("cold_start_s", "rss_mb", "jack_roundtrip_ms")
    if not sys.platform.startswith("linux"):
        for k in keys:
            res.set(k, None, "measured on Linux only (/proc, jackd)")
        return
    with contextlib.ExitStack() as stack:
        try:
            jack_env, what, own = stack.enter_context(_jack())
        except JackdMissing:
            _no_jack(res, keys, "jackd is not installed")
            return
        except JackdError as e:
            _no_jack(res, keys, " ".join(str(e).split())[:200])
            return
        client = "companion" if own else f"companion-bench-{os.getpid()}"
        root = str(Path(__file__).resolve().parents[1])
        env = dict(jack_env, PYTHONPATH=os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p))
        with tempfile.TemporaryDirectory(prefix="companion-bench-") as tmp:
            cfg = Path(tmp) / "config.yaml"
            cfg.write_text(json.dumps({  # JSON is YAML
                "model": str(model_dir.resolve()),
                "midi": {"backend": "jack", "client_name": client, "passthrough": True},
                "session": {"enabled": False},
                "answer": {"start": "beat"},  # its answer follows the phrase-end silence
            }))
            starts = []
            proc = None
            for i in range(plan.cold_starts):
                log(f"bench: starting companion live ({i + 1} of {plan.cold_starts})", quiet)
                proc = LiveProcess(cfg, env, Path(tmp))
                starts.append(proc.wait_ready())
                if i < plan.cold_starts - 1:
                    proc.stop()
            assert proc is not None
            try:
                log(f"bench: JACK round trip, {plan.jack_notes} notes", quiet)
                with client_env(jack_env):
                    trips, answer = _jack_roundtrip(client, plan.jack_notes,
                                                    np.random.default_rng(4))
                time.sleep(0.2)
                hwm = proc.status("VmHWM")
                tf_loaded = proc.loaded("tensorflow")
            finally:
                rc = proc.stop()
    res.set("cold_start_s", round(float(np.median(starts)), 3),
            f"median of {len(starts)} starts ({', '.join(f'{s:.2f}' for s in starts)} s), from "
            "process start to its 'listening on' line (ports open, model loaded); TensorFlow "
            f"{'LOADED' if tf_loaded else 'not loaded'}")
    res.set("rss_mb", round(hwm / 1024, 1) if hwm else None,
            f"VmHWM of the live process after {len(trips)} notes in and an answer of "
            f"{answer}+ notes out; exit code {rc} on SIGTERM")
    if trips:
        res.set("jack_roundtrip_ms", stats(np.array(trips) * 1000.0),
                f"{len(trips)} of {plan.jack_notes} notes, bench client -> {client}:in -> "
                f"passthrough -> {client}:out -> bench client, through {what}")
    else:
        res.set("jack_roundtrip_ms", None, "no passthrough note came back")


def _no_jack(res: Result, keys: tuple[str, ...], why: str) -> None:
    for k in keys:
        res.set(k, None, f"no JACK server is running and {why}: `companion live` has no MIDI "
                         "system to open here")
