"""End to end over real MIDI ports: `companion live` as a subprocess on a JACK server (dummy
driver), played to and listened to by this test through mido JACK ports.

Assertions are about order and correctness, never tight latencies: this must hold on a
loaded two-core CI machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import pytest
from support import ROOT, Heard, write_config

from companion.midi.input import open_input
from companion.midi.jacklib import SETTLE_S, close_in_turn

pytestmark = pytest.mark.jack

TEMPO = 120.0
BEAT = 60.0 / TEMPO
PHRASE_END_BEATS = 1.0
ANSWER_BEATS = 4
MAX_NOTE_BEATS = 1.0
#: A message the companion sent just before it handled SIGTERM may still be on its way (and
#: this process may be slow to stamp it on a loaded machine); an answer that went on playing
#: would still show: it has notes for seconds after this.
IN_FLIGHT_S = 0.25


class Companion:
    """`python -m companion live` in a subprocess, its output lines collected."""

    def __init__(self, env: dict, *args: str):
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "companion", "live", "--backend", "jack", *args],
            cwd=ROOT, env=dict(env, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "listening on" in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("companion did not start:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("companion did not exit after SIGTERM:\n" + "\n".join(self.lines))


class Performer(Heard):
    """This test's own JACK ports, connected to the companion's."""

    def __init__(self):
        super().__init__()
        self.backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
        to_name = self._find(self.backend.get_output_names(), ":in")
        from_name = self._find(self.backend.get_input_names(), ":out")
        self.to = self.backend.open_output(to_name)
        # polled, never an rtmidi callback (companion.midi.input says why)
        self.frm = open_input("UNIX_JACK", from_name, callback=self._heard)
        time.sleep(0.3)  # let the connections settle

    @staticmethod
    def _find(names: list[str], suffix: str) -> str:
        mine = [n for n in names if n.startswith("companion") and n.endswith(suffix)]
        assert len(mine) == 1, names
        return mine[0]

    def play(self, notes: list[tuple[int, float, float]]) -> float:
        """(pitch, start_beats, duration_beats) in real time; returns the time just before
        the last release was sent: the companion cannot have heard it earlier."""
        events = []
        for p, s, d in notes:
            events.append((s, 1, mido.Message("note_on", note=p, velocity=90)))
            events.append((s + d, 0, mido.Message("note_off", note=p)))
        t0 = time.monotonic() + 0.05
        last = t0
        for s, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
            delay = t0 + s * BEAT - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            last = time.monotonic()
            self.to.send(msg)
        return last

    @staticmethod
    def wait_answer(released: float) -> None:
        """Until the answer must be over: the phrase end, up to a beat to the grid, its
        length, its last note's longest sound, and some slack for a loaded machine."""
        end = released + (PHRASE_END_BEATS + 1 + ANSWER_BEATS + MAX_NOTE_BEATS) * BEAT + 2.0
        time.sleep(max(0.0, end - time.monotonic()))

    def close(self) -> None:
        close_in_turn([self.to.close, self.frm.close], SETTLE_S)


def note_ons(msgs):
    return [(t, m) for t, m in msgs if m.type == "note_on" and m.velocity > 0]


def assert_matched(msgs, context: str = "") -> None:
    """Every note-on has its note-off later (and a pitch is not struck twice while sounding)."""
    sounding: set[int] = set()
    # on failure, everything received (time, bytes): tells a lost message from a wrong one
    seen = "\n".join(f"{t:.4f} {m.hex()}" for t, m in msgs) + ("\n" + context if context else "")
    for _, m in msgs:
        if m.type == "note_on" and m.velocity > 0:
            assert m.note not in sounding, f"note {m.note} struck again while sounding:\n{seen}"
            sounding.add(m.note)
        elif m.type == "note_off" or m.type == "note_on":
            sounding.discard(m.note)
    assert not sounding, f"notes left sounding: {sorted(sounding)}\n{seen}"


CALL = [(67, 0, 0.4), (69, 0.5, 0.4), (71, 1, 0.4), (74, 1.5, 0.4), (72, 2, 0.9)]
CALL2 = [(60, 0, 0.4), (62, 0.5, 0.4), (64, 1, 0.9)]


@pytest.fixture
def live_config(tmp_path, model_pkg) -> Path:
    return write_config(
        tmp_path / "config.yaml", model_pkg,
        listen={"tempo_bpm": TEMPO, "phrase_end_beats": PHRASE_END_BEATS},
        answer={"length": ANSWER_BEATS, "min_beats": 1, "max_beats": ANSWER_BEATS, "seed": 3,
                "max_note_beats": MAX_NOTE_BEATS},
        session={"folder": str(tmp_path / "sessions")},
    )


def jackd_log(env: dict) -> str:
    """The JACK server's log (xruns: cycles whose MIDI it dropped)."""
    try:
        return "jackd: " + Path(env["JACKD_LOG"]).read_text()[-1500:]
    except (KeyError, OSError):
        return ""


# Every message of both calls and answers must arrive: 21 ms cycles (1024 frames), so that
# a client descheduled for a few ms on a busy CI machine is not an xrun, which drops that
# cycle's MIDI (a lost note-off: no phrase end, no answer).
@pytest.mark.parametrize("jack_server", [1024], indirect=True)
def test_call_and_response_over_jack(jack_server, monkeypatch, tmp_path, live_config):
    for k, v in jack_server.items():
        if k.startswith("JACK"):
            monkeypatch.setenv(k, v)
    comp = Companion(jack_server, "--config", str(live_config))
    performer = None
    try:
        comp.wait_ready()
        performer = Performer()

        # 1. a phrase: the answer comes after the phrase end, and not before
        released = performer.play(CALL)
        performer.wait_answer(released)
        got = performer.received()
        ons = note_ons(got)
        assert ons, "no answer:\n" + "\n".join(comp.lines) + "\n" + jackd_log(jack_server)
        assert ons[0][0] > released + PHRASE_END_BEATS * BEAT
        assert all(m.channel == 0 for _, m in got)
        lo, hi = min(p for p, _, _ in CALL) - 12, max(p for p, _, _ in CALL) + 12
        assert all(lo <= m.note <= hi for _, m in ons)
        assert_matched(got, jackd_log(jack_server))

        # 2. another phrase; SIGTERM while its answer plays
        n_first = len(got)
        released = performer.play(CALL2)
        deadline = time.monotonic() + 10
        while len(note_ons(performer.received()[n_first:])) < 1:
            assert time.monotonic() < deadline, ("no second answer:\n" + "\n".join(comp.lines)
                                                 + "\n" + jackd_log(jack_server))
            time.sleep(0.005)
        t_term = time.monotonic()
        comp.proc.send_signal(signal.SIGTERM)
        assert comp.stop() == 0, "\n".join(comp.lines)
        time.sleep(0.3)
        got = performer.received()
        after = [m for t, m in got if t > t_term + IN_FLIGHT_S]
        assert all(m.type == "note_off" or (m.type == "control_change" and m.control == 123)
                   for m in after), after
        assert any(m.type == "control_change" and m.control == 123
                   for t, m in got if t > t_term)
        assert_matched(got, jackd_log(jack_server))
    finally:
        if performer is not None:
            performer.close()
        comp.stop()

    sessions = list((tmp_path / "sessions").glob("session-*.mid"))
    assert len(sessions) == 1, "\n".join(comp.lines)
    mf = mido.MidiFile(sessions[0])
    assert [t.name for t in mf.tracks] == ["performer", "companion"]
    heard = [m for m in mf.tracks[0] if m.type == "note_on" and m.velocity > 0]
    assert [m.note for m in heard] == [p for p, _, _ in CALL + CALL2]


def test_unknown_port_is_an_error_listing_the_ports(jack_server, live_config):
    env = dict(jack_server, PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-m", "companion", "live", "--backend", "jack", "--config",
         str(live_config), "--output", "no-such-synth"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no-such-synth" in lines[0]
    assert "output ports:" in lines[0]


def test_the_companions_own_threads_yield_to_jacks(jack_server, live_config):
    """Its real-time threads (round-robin: scheduler, engine) run below its JACK clients'
    process threads (FIFO, at the priority jackd gives clients), never at theirs."""
    comp = Companion(jack_server, "--config", str(live_config))
    try:
        comp.wait_ready()
        pid = comp.proc.pid
        threads: dict[int, list[int]] = {}
        for tid in map(int, os.listdir(f"/proc/{pid}/task")):
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                prio = os.sched_getparam(tid).sched_priority
                threads.setdefault(os.sched_getscheduler(tid), []).append(prio)
    finally:
        assert comp.stop() == 0
    jack, ours = threads.get(os.SCHED_FIFO), threads.get(os.SCHED_RR)
    if not jack or not ours:
        pytest.skip("no real-time scheduling here (needs root or an rtprio limit)")
    print(f"JACK client threads at FIFO {sorted(jack)}, the companion's at RR {sorted(ours)}")
    assert max(ours) < min(jack)


def test_ports_lists_the_companion(jack_server, live_config):
    comp = Companion(jack_server, "--config", str(live_config))
    try:
        comp.wait_ready()
        env = dict(jack_server, PYTHONPATH=str(ROOT))
        r = subprocess.run([sys.executable, "-m", "companion", "ports", "--backend", "jack"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "companion" in r.stdout and ":in" in r.stdout and ":out" in r.stdout
    finally:
        assert comp.stop() == 0
    assert os.path.isdir(Path(live_config).parent)
