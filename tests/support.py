"""Helpers for the tests (imported as `support`: pytest puts tests/ on sys.path): the one
module test files share; no test module imports another (tests/test_layout.py)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mido
import pytest

from bench.jackserver import (
    LOG_KEY,
    MODE_KEY,
    RATE,
    SCHED_KEY,
    JackdError,
    JackdMissing,
    dummy_server,
)
from companion.engine.engine import Answer, Engine
from companion.engine.harmony import HarmonyModel
from companion.midi.input import open_input
from companion.midi.jacklib import SETTLE_S, close_in_turn
from companion.realtime.clock import VirtualClock
from companion.realtime.scheduler import VirtualScheduler

if TYPE_CHECKING:
    from companion.config import Config
    from companion.encoding.melody import Melody
    from companion.engine.model import StepModel

ROOT = Path(__file__).resolve().parents[1]

#: The music21 corpus whose first tunes make the tests' vocabulary and calls: it ships with
#: music21, so these tests need no data beside the repository.
TUNES = "music21:oneills1850"


class Heard:
    """What a test's MIDI input port receives, stamped on arrival (its callback side)."""

    def __init__(self) -> None:
        self.got: list[tuple[float, object]] = []
        self.lock = threading.Lock()

    def _heard(self, msg) -> None:
        with self.lock:
            self.got.append((time.monotonic(), msg))

    def received(self) -> list:
        with self.lock:
            return list(self.got)


def delete_rtmidi(port) -> None:
    """Closes a python-rtmidi port, then its client SETTLE_S later, as the companion closes its
    own: a JACK2 client closed while its notification thread still handles the port just
    unregistered crashes the process."""
    close_in_turn([port.close_port, port.delete], SETTLE_S)


@cache
def tunes(first: int, count: int) -> tuple[Melody, ...]:
    """Melodies of TUNES numbered ``first`` .. ``first + count - 1`` (1-based), read with
    companion.encoding.melody like any corpus file, one tune at a time."""
    from music21 import converter

    from companion.encoding.melody import melody_from_score
    from train.corpus import resolve

    opus = resolve(TUNES)[0]  # tunes 1-50
    if first < 1 or first + count - 1 > 50:
        raise ValueError(f"tunes {first}..{first + count - 1}: {opus.name} holds tunes 1-50")
    return tuple(melody_from_score(converter.parse(str(opus), number=i), f"{opus.name}#{i}")
                 for i in range(first, first + count))


def write_tune(path: Path, number: int) -> Path:
    """Tune ``number`` of TUNES as a one-track MIDI file at ``path`` (a call file)."""
    from companion.encoding.phrases import Phrase, PhraseNote
    from companion.midi.files import write_tracks

    m = tunes(number, 1)[0]
    notes = [PhraseNote(int(p), float(s), float(d), int(v))
             for p, s, d, v in zip(m.pitches, m.onsets, m.durations, m.velocities, strict=True)]
    write_tracks(path, [("call", Phrase(m.name, notes).messages())], 120.0)
    return path


def _config_data(model_pkg: Path | None, sections: dict) -> dict:
    """``section={key: value}`` overrides as config data. A test that names
    ``listen.tempo_bpm`` or ``listen.phrase_end_beats`` plays at that tempo and waits that
    phrase end: its time.tempo and time.phrase_end are "fixed" unless it sets them. Its
    answers start on the first beat after the phrase-end silence (``answer.start: beat``)
    unless it sets ``answer.start``: the tests of trading bars do."""
    data: dict = {k: dict(v) for k, v in sections.items()}
    data.setdefault("answer", {}).setdefault("start", "beat")
    listen, time = data.get("listen", {}), data.setdefault("time", {})
    if "tempo_bpm" in listen:
        time.setdefault("tempo", "fixed")
    if "phrase_end_beats" in listen:
        time.setdefault("phrase_end", "fixed")
    if not time:
        del data["time"]
    if model_pkg is not None:
        data["model"] = str(model_pkg)
    return data


def make_config(model_pkg: Path | None = None, **sections: dict) -> Config:
    """A Config from defaults and ``section={key: value}`` overrides, checked like a file."""
    from companion import config

    return config.from_dict(_config_data(model_pkg, sections))


def write_config(path: Path, model_pkg: Path | None = None, **sections: dict) -> Path:
    """The same config data as ``make_config``, written as a config file."""
    import yaml

    path.write_text(yaml.safe_dump(_config_data(model_pkg, sections)))
    return path


class EngineRig:
    """The engine on a virtual clock, as `companion respond` runs it: a VirtualScheduler that
    records what it sends, and time that moves only when the test moves it.

    Moving time to ``t`` first plays every answer note due by then, each at its own time,
    so what the engine hears at ``t`` finds playback where it would be live. ``sent`` holds
    (time, message) as sent; ``events`` (kind, time, data) from the engine's event hook.
    """

    def __init__(self, model: StepModel, cfg: Config, seed: int | None = 1,
                 harmony: Path | None = None) -> None:
        self.clock = VirtualClock()
        self.sent: list[tuple[float, mido.Message]] = []
        self.player = VirtualScheduler(lambda m: self.sent.append((self.clock.now(), m)),
                                       self.clock, 0)
        self.events: list[tuple[str, float, dict]] = []
        self.engine = Engine(model, cfg, self.player, self.clock, seed,
                             on_event=lambda k, t, **d: self.events.append((k, t, d)),
                             harmony=None if harmony is None else lambda: HarmonyModel(harmony))
        self.beat = 60.0 / cfg.listen.tempo_bpm  # seconds: ``play`` counts in these beats

    def to(self, t: float) -> None:
        """Move time to ``t`` (never back), playing what is due on the way."""
        self.player.advance(t)
        self.clock.set(t)

    def at(self, t: float, msg: mido.Message) -> None:
        """The engine hears ``msg`` at ``t``."""
        self.to(t)
        self.engine.on_message(msg, t)

    def poll(self, t: float) -> Answer | None:
        """The engine's poll at ``t``: the answer decided then, or None."""
        self.to(t)
        return self.engine.poll(t)

    def play(self, notes: Iterable[tuple[int, float, float]], t0: float = 0.0,
             velocity: int | Callable[[int], int] = 80, live: bool = False) -> float:
        """Play ``notes`` (pitch, start_beats, duration_beats: beats of the config's tempo)
        from ``t0`` seconds, events in time order (at one time note-offs first); the velocity
        is fixed or a function of the pitch; ``live``: every deadline on the way is polled,
        as the live loop does (``feed``). Returns the time of the last release."""
        beat = self.beat
        events = []
        for p, s, d in notes:
            v = velocity(p) if callable(velocity) else velocity
            events.append((t0 + s * beat, 1, mido.Message("note_on", note=p, velocity=v)))
            events.append((t0 + (s + d) * beat, 0, mido.Message("note_off", note=p)))
        events.sort(key=lambda e: (e[0], e[1]))
        for t, _, m in events:
            if live:
                self.feed(t, m)
            else:
                self.at(t, m)
        return events[-1][0]

    def until(self, t: float) -> None:
        """Every phrase end and every scheduled note up to ``t``, each at its own time."""
        while True:
            d = self.engine.next_deadline()
            if d is None or d > t:
                break
            self.poll(max(d, self.clock.now()))
        self.to(t)

    def feed(self, t: float, msg: mido.Message) -> None:
        """``msg`` at ``t`` (or now, if ``t`` is past), after every phrase end before it."""
        t = max(t, self.clock.now())
        self.until(t)
        self.engine.on_message(msg, t)

    def finish(self) -> tuple[float, Answer | None]:
        """Poll at the next deadline and play the answer out: (deadline, answer)."""
        d = self.engine.next_deadline()
        answer = self.poll(d)
        self.player.flush()
        return d, answer

    def events_of(self, kind: str) -> list[dict]:
        """The data of each event of ``kind``, with its time as ``t``."""
        return [d | {"t": t} for k, t, d in self.events if k == kind]


def wait_for(cond: Callable[[], object], timeout: float = 15.0, what: str = "timed out",
             context: Callable[[], str] = lambda: "", poll: float = 0.005) -> None:
    """Until ``cond()`` holds; fails with ``what`` and ``context()`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}\n{context()}"
        time.sleep(poll)


# -- the engine's calls -------------------------------------------------------------------


def touch(pitch: int) -> int:
    """The engine tests' calls' velocities: each pitch its own, 70..89."""
    return 70 + pitch % 20


#: The engine tests' call (D major, at their 120 BPM): (pitch, start_beats, duration_beats).
ENGINE_CALL = [(62, 0, 0.9), (66, 1, 0.4), (69, 1.5, 0.4), (71, 2, 0.9), (69, 3, 0.9),
               (66, 4, 1.7)]


# -- the live wiring on the in-process loopback ---------------------------------------------

#: The loopback tests' tempo (listen.tempo_bpm): their calls are played at it.
LOOP_TEMPO = 240.0
LOOP_BEAT = 60.0 / LOOP_TEMPO

#: Normal calls, like a performer's phrases: (pitch, start_beats, duration_beats).
CALLS = [
    [(64, 0, 0.4), (67, 0.5, 0.4), (69, 1, 0.4), (71, 1.5, 0.9)],
    [(60, 0, 0.9), (62, 1, 0.4), (64, 1.5, 0.4)],
    [(72, 0, 0.2), (71, 0.25, 0.2), (69, 0.5, 0.2), (67, 0.75, 0.7)],
]
LOOP_CALL = CALLS[0]


def call_messages(call, t0: float, channel: int = 0) -> list[tuple[float, mido.Message]]:
    """``call`` as (seconds at LOOP_TEMPO from ``t0``, message), in time order (at one time
    note-offs first)."""
    out = []
    for p, s, d in call:
        out.append((t0 + s * LOOP_BEAT, 1, mido.Message("note_on", channel=channel, note=p,
                                                          velocity=80)))
        out.append((t0 + (s + d) * LOOP_BEAT, 0,
                    mido.Message("note_off", channel=channel, note=p)))
    out.sort(key=lambda e: (e[0], e[1]))
    return [(t, m) for t, _, m in out]


def play(inport, call, channel: int = 0) -> float:
    """``call`` into a loopback input in real time at LOOP_TEMPO; returns the time just
    before its last message was delivered."""
    msgs = call_messages(call, 0.0, channel)
    t0 = time.perf_counter() + 0.01
    last = t0
    for t, m in msgs:
        time.sleep(max(0.0, t0 + t - time.perf_counter()))
        last = time.perf_counter()
        inport.deliver(m)
    return last


def assert_all_off(msgs: list[mido.Message]) -> None:
    """Every note-on the companion sent was followed by its note-off (or All Notes Off)."""
    sounding: set[tuple[int, int]] = set()
    for m in msgs:
        if m.type == "note_on" and m.velocity > 0:
            sounding.add((m.channel, m.note))
        elif m.type in ("note_on", "note_off"):
            sounding.discard((m.channel, m.note))
        elif m.type == "control_change" and m.control in (120, 123):
            sounding = {s for s in sounding if s[0] != m.channel}
    assert not sounding, f"left sounding: {sorted(sounding)}"


#: The control surface tests' call: (pitch, start s), each note 0.1 s.
UI_CALL = [(67, 0.0), (69, 0.15), (71, 0.3), (72, 0.45)]


class UiRig:
    """A started Live on the loopback with a UiServer on it."""

    def __init__(self, model, host="127.0.0.1", token=None, **sections):
        from companion.midi.loopback import LoopbackIn, LoopbackOut
        from companion.realtime.live import Live
        from companion.ui.server import UiServer

        cfg = make_config(None, listen={"tempo_bpm": 240, "phrase_end_beats": 1},
                          answer={"seed": 1, "min_beats": 1, "max_beats": 2},
                          session={"enabled": False}, time={"tempo": "fixed"}, **sections)
        self.inport, self.outport = LoopbackIn(), LoopbackOut()
        self.live = Live(cfg, model, self.inport, self.outport, seed=1)
        self.live.start()
        self.server = UiServer(self.live, host, 0, token)
        self.url = self.server.start()
        self.port = self.server.guard.port
        self.base = f"http://127.0.0.1:{self.port}"
        self.origin = self.base

    def play(self, notes=UI_CALL) -> None:
        t0 = time.monotonic()
        for p, s in notes:
            time.sleep(max(0.0, t0 + s - time.monotonic()))
            self.inport.deliver(mido.Message("note_on", note=p, velocity=80))
            time.sleep(0.1)
            self.inport.deliver(mido.Message("note_off", note=p))

    def close(self) -> None:
        self.server.stop()
        self.live.stop()


# -- `companion live` over JACK -------------------------------------------------------------

#: The JACK tests' tempo (listen.tempo_bpm) and phrase end; the answers' longest length and
#: note (answer.max_beats, answer.max_note_beats) where a test waits an answer out.
JACK_TEMPO = 120.0
JACK_BEAT = 60.0 / JACK_TEMPO
PHRASE_END_BEATS = 1.0
ANSWER_BEATS = 4
MAX_NOTE_BEATS = 1.0
#: The JACK tests' calls: (pitch, start_beats, duration_beats).
JACK_CALL = [(67, 0, 0.4), (69, 0.5, 0.4), (71, 1, 0.4), (74, 1.5, 0.4), (72, 2, 0.9)]
JACK_CALL2 = [(60, 0, 0.4), (62, 0.5, 0.4), (64, 1, 0.9)]


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

    def count(self, text: str) -> int:
        """How many of its lines so far hold ``text``."""
        return sum(text in line for line in list(self.lines))

    def wait_line(self, text: str, n: int = 1, timeout: float = 15) -> None:
        """Until ``n`` of its lines hold ``text``."""
        wait_for(lambda: self.count(text) >= n, timeout, f"no {n} lines with {text!r}",
                 lambda: "\n".join(self.lines))

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
        self.started = 0.0  # when the last call played began (time.monotonic)
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

    def play(self, notes: list[tuple[int, float, float]], beat: float = JACK_BEAT,
             velocity: Callable[[int], int] = lambda i: 90) -> float:
        """(pitch, start_beats, duration_beats) in real time, ``beat`` seconds a beat, the
        ``i``-th note at ``velocity(i)``; returns the time just before the last release was
        sent: the companion cannot have heard it earlier."""
        events = []
        for i, (p, s, d) in enumerate(notes):
            events.append((s, 1, mido.Message("note_on", note=p, velocity=velocity(i))))
            events.append((s + d, 0, mido.Message("note_off", note=p)))
        t0 = self.started = time.monotonic() + 0.05  # when its beat 0 was due
        last = t0
        for s, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
            delay = t0 + s * beat - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            last = time.monotonic()
            self.to.send(msg)
        return last

    @staticmethod
    def wait_answer(released: float, beat: float = JACK_BEAT) -> None:
        """Until the answer must be over: the phrase end, up to a beat to the grid, its
        length, its last note's longest sound (``beat`` seconds a beat), and some slack for
        a loaded machine."""
        end = released + (PHRASE_END_BEATS + 1 + ANSWER_BEATS + MAX_NOTE_BEATS) * beat + 2.0
        time.sleep(max(0.0, end - time.monotonic()))

    def close(self) -> None:
        close_in_turn([self.to.close, self.frm.close], SETTLE_S)


def note_ons(msgs):
    return [(t, m) for t, m in msgs if m.type == "note_on" and m.velocity > 0]


#: What `companion live` logs when it has decided an answer (its number of notes).
ANSWER_LINE = re.compile(r"-> answer of (\d+) notes")


def wait_answer_heard(comp: Companion, port: Heard, answers: int, heard: int,
                      timeout: float = 15) -> None:
    """Until the companion has logged its answer number ``answers + 1`` and ``port`` has
    heard, after its first ``heard`` messages, a note-off for each of that answer's notes:
    the answer is over, however long it took."""
    def notes() -> int | None:
        found = [m for line in list(comp.lines) if (m := ANSWER_LINE.search(line))]
        return int(found[answers][1]) if len(found) > answers else None

    def offs() -> int:
        return sum(1 for _, m in port.received()[heard:]
                   if m.type == "note_off" or (m.type == "note_on" and m.velocity == 0))

    context = lambda: "\n".join(comp.lines)  # noqa: E731
    wait_for(lambda: notes() is not None, timeout, "no answer logged", context)
    wait_for(lambda: offs() >= notes(), timeout, f"not every note of the answer heard "
             f"({notes()} notes)", context)


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


#: The environment key (beside JACKD_LOG) of the byte in the server's log where this test's
#: part of it starts: a shared server's log holds the tests' before it too.
LOG_FROM_KEY = "JACKD_LOG_FROM"


def server_log(env: dict) -> str:
    """The server's log since this test's start (``LOG_FROM_KEY``)."""
    with open(env[LOG_KEY], "rb") as f:
        f.seek(int(env.get(LOG_FROM_KEY, 0)))
        return f.read().decode(errors="replace")


def jackd_log(env: dict) -> str:
    """The JACK server's log (xruns: cycles whose MIDI it dropped), for failure messages."""
    try:
        return "jackd: " + server_log(env)[-1500:]
    except (KeyError, OSError):
        return ""


def jack_ports(env: dict) -> list[str] | None:
    """The ports on the server of ``env`` (``jack_lsp``); None where it does not answer."""
    try:
        r = subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.split() if r.returncode == 0 else None


@contextlib.contextmanager
def jack_server_or_skip(frames: int, log: Path, sync: bool = False) -> Iterator[dict]:
    """`bench.jackserver.dummy_server`: without jackd the test skips (in CI it fails); a
    server that does not start fails it."""
    try:
        with dummy_server(frames, log=log, prefix="companion-test", sync=sync) as env:
            yield env
    except JackdMissing:
        if os.environ.get("CI"):
            pytest.fail("jackd is not installed: the JACK end-to-end tests cannot run "
                        "(install jackd2)")
        pytest.skip("jackd is not installed (install jackd2 to run the JACK tests)")
    except JackdError as e:
        pytest.fail(str(e))


def jack_env(jack_server: dict, monkeypatch) -> dict:
    """This process's own JACK clients find the server of ``jack_server`` (for this test)."""
    for k, v in jack_server.items():
        if k.startswith("JACK"):
            monkeypatch.setenv(k, v)
    return jack_server


def jack_config(tmp_path: Path, model_pkg: Path, answer_beats: int = 4, **extra) -> Path:
    """The reliability tests' config file: JACK_TEMPO, answers of up to ``answer_beats``,
    sessions saved under ``tmp_path``; ``extra``: more config sections (or keys of
    ``listen`` and ``session``)."""
    return write_config(
        tmp_path / "config.yaml", model_pkg,
        listen={"tempo_bpm": JACK_TEMPO, "phrase_end_beats": PHRASE_END_BEATS,
                **extra.pop("listen", {})},
        answer={"length": answer_beats, "min_beats": 1, "max_beats": answer_beats, "seed": 3,
                "max_note_beats": 1.0},
        session={"folder": str(tmp_path / "sessions"), **extra.pop("session", {})},
        **extra,
    )


def raw_out(target_prefix: str, name: str = "raw"):
    """A python-rtmidi output connected to the first input port starting with the prefix:
    bytes go out as given, bypassing mido's validation."""
    import rtmidi

    out = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name=name)
    ports = out.get_ports()
    hits = [i for i, p in enumerate(ports) if p.startswith(target_prefix)]
    assert hits, ports
    out.open_port(hits[0])
    time.sleep(0.2)
    return out


def answer_latency(performer: Performer, comp: Companion, call=JACK_CALL) -> float:
    """Play a call; seconds from its last release to the first answer note received."""
    n = len(performer.received())
    released = performer.play(call)
    deadline = time.monotonic() + 15
    while not note_ons(performer.received()[n:]):
        assert time.monotonic() < deadline, "no answer:\n" + "\n".join(comp.lines[-20:])
        time.sleep(0.002)
    first = note_ons(performer.received()[n:])[0][0]
    assert first > released + PHRASE_END_BEATS * JACK_BEAT - 0.05
    return first - released


def wait_quiet(performer: Performer, quiet_s: float = 1.0, timeout: float = 20) -> None:
    """Until nothing has come from the companion for ``quiet_s`` (an answer is over)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = performer.received()
        if not got or time.monotonic() - got[-1][0] > quiet_s:
            return
        time.sleep(0.05)
    raise AssertionError("the companion never went quiet")


@contextlib.contextmanager
def raw_rig(jack_server, monkeypatch, tmp_path: Path, model_pkg: Path, name: str,
            **extra: dict):
    """`companion live` on the JACK server (``extra``: config sections), a performer playing
    into it and hearing its output, and a raw port ``name`` into its input. On leaving, all
    stopped; then the companion must have exited 0, with no traceback, and nothing left
    sounding."""
    env = jack_env(jack_server, monkeypatch)
    comp = Companion(env, "--config", str(jack_config(tmp_path, model_pkg, **extra)))
    performer = raw = None
    try:
        comp.wait_ready()
        performer = Performer()
        raw = raw_out("companion", name)
        yield comp, performer, raw
    finally:
        if raw is not None:
            delete_rtmidi(raw)
        rc = comp.stop()
        time.sleep(0.3)
        if performer is not None:
            performer.close()
    assert rc == 0, "\n".join(comp.lines)
    assert not [ln for ln in comp.lines if "Traceback" in ln], "\n".join(comp.lines)
    assert_all_off([m for _, m in performer.received()])


def flood(raw, performer: Performer, comp: Companion) -> tuple[int, float, float, list]:
    """10,200 raw messages in about a second; then until the companion is quiet again."""
    sent = 0
    t0 = time.monotonic()
    i = 0
    while sent < 10_200:
        p = 36 + (i * 7) % 48
        for msg in ([0x90, p, 90], [0xB0, 1, i % 128], [0xE0, i % 128, 64],
                    [0xD0, i % 128], [0x80, p, 0]):
            raw.send_message(msg)
            sent += 1
        i += 1
        if i % 5 == 0:  # about 10,000 a second
            time.sleep(max(0.0, t0 + sent / 10_000 - time.monotonic()))
    flood_end = time.monotonic()
    n = len(performer.received())
    # the flood was a (very fast) phrase: its answer comes in time or not at all
    deadline = time.monotonic() + 3
    while not any("input flood" in ln for ln in comp.lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    wait_quiet(performer, timeout=30)
    assert comp.proc.poll() is None, "\n".join(comp.lines)
    return sent, flood_end - t0, flood_end, note_ons(performer.received()[n:])


# -- the clock rig: `companion live` following a MIDI clock, judged by jack_midi_dump ---------

END_NOTE = 108


TOOLS = ("jack_midi_clock", "jack_midi_dump", "jack_connect", "jack_transport", "jack_lsp")


def jack_tools() -> None:
    """The JACK tools the clock rig runs: missing, the test skips (fails in CI)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not installed (Debian: jack-midi-clock, jackd2)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def read_dump(path: Path) -> list[tuple[int, list[int]]]:
    """``jack_midi_dump -a`` lines ``FRAME: HEX HEX ... [description]`` as (frame, bytes)."""
    events = []
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(\d+):((?:\s[0-9a-f]{2})+)(?:\s|$)", line)
        if m:
            events.append((int(m.group(1)), [int(b, 16) for b in m.group(2).split()]))
    return events


def heard_ticks(log: str) -> int | None:
    """The clock ticks the companion says it heard (logged when it stops)."""
    heard = re.findall(r"MIDI clock ticks heard: (\d+)", log)
    return int(heard[-1]) if heard else None


def put_back_lost_ticks(events: list[tuple[int, list[int]]], period: int,
                        log: str) -> tuple[list[tuple[int, list[int]]], int]:
    """The judge is a JACK client too, and now and then misses a cycle's MIDI, a tick among
    it; a tick the clock did not send (its own cycle missed) is missing for every listener,
    and counts as not sent. In frame time a tick interval is the clock's (the median of the
    9 around it) moved by at most one period, so while a period is under half a tick, an
    interval between two ticks with no other clock message between them, its neighbours
    within a period of the median, spans round(interval / median) ticks. Those missing are
    put back (evenly spaced) when they are exactly the ticks the companion heard beyond the
    judge: nobody hears a tick that was not sent. Returns the events and how many ticks
    were put back."""
    ticks = [i for i, (_, d) in enumerate(events) if d == [0xF8]]
    gaps = [events[j][0] - events[i][0] for i, j in zip(ticks, ticks[1:], strict=False)]
    lost: dict[int, list[int]] = {}  # index of the tick before a gap -> frames put back
    for n, (i, j) in enumerate(zip(ticks, ticks[1:], strict=False)):
        clock_between = any(d and d[0] in (0xF2, 0xFA, 0xFB, 0xFC) for _, d in events[i:j])
        around = gaps[max(0, n - 4):n + 5]
        med = sorted(around)[len(around) // 2]
        k = round(gaps[n] / med)
        steady = all(abs(g - med) <= period for g in gaps[max(0, n - 1):n] + gaps[n + 1:n + 2])
        if k >= 2 and steady and not clock_between and 2 * period < med:
            lost[i] = [events[i][0] + round(m * gaps[n] / k) for m in range(1, k)]
    missing = sum(len(v) for v in lost.values())
    if not missing or missing != (heard_ticks(log) or 0) - len(ticks):
        return events, 0
    out = []
    for i, event in enumerate(events):
        out.append(event)
        out.extend((f, [0xF8]) for f in lost.get(i, []))
    return out, missing


def beat_frames(events: list[tuple[int, list[int]]], ticks: int = 24) -> list[int]:
    """The frames of the clock's beats: ticks whose count since the last Start is 0 mod 24
    (``ticks``: 12 for eighths)."""
    beats, count = [], None
    for frame, data in events:
        if data == [0xFA]:
            count = 0
        elif data == [0xF8] and count is not None:
            if count % ticks == 0:
                beats.append(frame)
            count += 1
    return beats


def server_note(env: dict, events: list[tuple[int, list[int]]], put_back: int,
                log: str) -> str:
    """How the server ran (scheduling, xruns, the cycles in which the judge was not done)
    and the clock ticks the judge counted (with those it lost put back) beside those the
    companion logged on stop: fewer heard is ticks lost at its input; a judge that missed
    many cycles has lost ticks and stamped the rest late, and cannot judge."""
    text = server_log(env)
    xruns = text.count("XRun")
    judge_late = text.count("client = judge was not finished")
    judged = sum(1 for _, d in events if d == [0xF8])
    return (f"jackd {env[SCHED_KEY]} {env[MODE_KEY]}, {xruns} xruns, {judge_late} in the "
            f"judge; ticks: "
            f"{judged} judged ({put_back} of them lost by the judge, put back), "
            f"{heard_ticks(log)} heard; not finished: {late_clients(text)}")


def check_graph_runs(env: dict, clients: dict[str, int], folder: Path) -> None:
    """Fails when the synchronous graph has stalled already, before anything is measured:
    each cycle then waits JACK's whole timeout for a client that never finishes, and the
    clients after it hear nothing. The message names the stalled cycles and gives the stacks
    of the real-time threads of the ``clients`` (name: pid) and of this process (all their
    threads in ``folder/stacks.txt``): a client that hangs shows there."""
    stalled = _stalls(env)
    if stalled:
        clients = {**clients, "this test (the performer)": os.getpid()}
        pytest.fail(f"the synchronous JACK graph stalled {stalled} cycles during the rig's "
                    f"setup, before the companion was measured ({env[SCHED_KEY]}); "
                    f"real-time threads:\n{client_stacks(clients, folder / 'stacks.txt')}")


def client_stacks(clients: dict[str, int], path: Path) -> str:
    """The stacks of each client's SCHED_FIFO threads (JACK's process threads), by gdb where
    installed, else the kernel's; every thread's into ``path``."""
    found, every = [], []
    for name, pid in clients.items():
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            found.append(f"{name} ({pid}): gone")
            continue
        fifo = {t for t in tids if _policy(t) == os.SCHED_FIFO}
        stacks = _gdb_stacks(pid) or {t: _kernel_stack(t) for t in tids}
        every += [f"== {name} ({pid}) thread {t}\n{st}" for t, st in stacks.items()]
        found += [f"{name} ({pid}) thread {t}:\n{stacks.get(t, '?')}" for t in sorted(fifo)]
    path.write_text("\n".join(every))
    return "\n".join(found) + f"\n(every thread's stack: {path})"


def _policy(tid: int) -> int | None:
    try:
        return os.sched_getscheduler(tid)
    except OSError:
        return None


def _gdb_stacks(pid: int) -> dict[int, str]:
    """{thread id: its backtrace} by ``gdb -batch``; empty without gdb or when it fails."""
    if shutil.which("gdb") is None:
        return {}
    try:
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx",
                              "-ex", "thread apply all bt 20"], capture_output=True,
                             text=True, timeout=60).stdout
    except subprocess.TimeoutExpired:
        return {}
    parts = re.split(r"^Thread \d+ \(.*?LWP (\d+)\).*$", out, flags=re.M)
    return {int(tid): text.strip() for tid, text in zip(parts[1::2], parts[2::2], strict=True)}


def _kernel_stack(tid: int) -> str:
    try:
        return Path(f"/proc/{tid}/stack").read_text().strip()
    except OSError as e:
        return f"(no stack: {e.strerror})"


#: How long a rig just set up runs before its graph is checked: a stalled cycle is logged
#: once it has waited out the timeout (1 s).
RIG_CHECK_S = 1.2


@dataclass
class Rig:
    """A clock rig: its server's environment, the companion, the judge's dump, the
    performer (this process's output into the companion), the one jack_transport where asked
    for, and the clients' pids by name."""

    env: dict
    comp: Companion
    dump_path: Path
    performer: Any
    transport: subprocess.Popen | None
    clients: dict[str, int]


@contextlib.contextmanager
def clock_rig(env: dict, frames: int, folder: Path, cfg: Path, clock_args: list[str],
              transport: bool = False) -> Iterator[Rig]:
    """The companion (config ``cfg``), the judge, ``jack_transport`` (with ``transport``)
    and ``jack_midi_clock clock_args``, connected, and the performer into the companion.
    When the synchronous graph stalled while they were set up (JACK2 loses a wake-up, about
    one rig in 185: jack2#156, docs/reliability.md), nothing is measured yet: the rig, taken
    down, is set up once more on a fresh server of the same period (said on stdout, the
    first rig's stacks in ``folder/stacks-1.txt``); a second stall fails
    (`check_graph_runs`). After the block the clients close and the companion stops, its
    exit status 0."""
    with contextlib.ExitStack() as servers:
        for attempt in (1, 2):
            stack = contextlib.ExitStack()
            try:
                rig = _set_up(stack, env, folder, cfg, clock_args, transport)
                time.sleep(RIG_CHECK_S)
                if attempt == 1 and _stalls(env):
                    client_stacks({**rig.clients, "this test": os.getpid()},
                                  folder / "stacks-1.txt")
                    raise GraphStalled
                check_graph_runs(env, rig.clients, folder)
                break
            except (Exception, pytest.fail.Exception) as e:
                stack.close()
                if attempt == 2 or not _stalls(env):
                    raise
                why = "" if isinstance(e, GraphStalled) else f", and then: {e}"
                print(f"the synchronous graph stalled {_stalls(env)} cycles while the rig was "
                      f"set up ({env[LOG_KEY]}{why}): set up again on a fresh server")
                env = servers.enter_context(dummy_server(
                    frames, log=folder / "jackd-2.log", prefix="companion-test",
                    sync=env[MODE_KEY] == "synchronous"))
        with stack:
            yield rig
        assert rig.comp.proc.returncode == 0, rig.comp.lines


class GraphStalled(Exception):
    """The synchronous graph stalled while a rig was set up."""


def _stalls(env: dict) -> int:
    from bench.clockrig import STALLED

    return server_log(env).count(STALLED)


def _set_up(stack: contextlib.ExitStack, env: dict, folder: Path, cfg: Path,
            clock_args: list[str], transport: bool) -> Rig:
    """One rig on the server of ``env``, its teardown on ``stack``."""
    from bench.clockrig import set_up_clients

    comp = Companion(env, "--config", str(cfg))
    stack.callback(comp.stop)
    comp.wait_ready()
    dump_path = folder / "dump.txt"
    parts = set_up_clients(stack, env, dump_path, clock_args, transport)
    clients = {"companion": comp.proc.pid, "judge": parts.judge.pid,
               "jack_midi_clock": parts.clock.pid}
    if parts.transport is not None:
        clients["jack_transport"] = parts.transport.pid
    return Rig(env, comp, dump_path, parts.performer, parts.transport, clients)


def assert_every_tick_heard(events: list[tuple[int, list[int]]], log: str, server: str) -> None:
    """The companion heard at least the ticks the judge counted (it may hear more: the judge
    stops first): fewer were lost at its input, and its grid is late by those."""
    judged = sum(1 for _, d in events if d == [0xF8])
    heard = heard_ticks(log)
    assert heard is not None and heard >= judged, \
        f"the companion heard {heard} ticks, the judge {judged}: lost at its input " \
        f"({server})\n{log}"


def late_clients(server_log: str) -> str:
    """Which clients jackd found not finished at a cycle's end, how often and in which state
    (Triggered: not yet run, or waiting for a client before it; Running: still in its
    process callback): says whose cycles were missed, the judge's or a client before it."""
    found = Counter(re.findall(r"client = (.+?) was not finished, state = (\w+)", server_log))
    return ", ".join(f"{name} {state} {n}" for (name, state), n in found.most_common()) or "none"


# --- MIDI clock sync over JACK (tests/test_clock_jack.py, the lab's small periods)

CLOCK_BPM = 100.0


def _transport(env: dict, command: str) -> None:
    subprocess.run(["jack_transport"], input=f"{command}\nquit\n", env=env, text=True,
                   capture_output=True, timeout=10, check=True)


#: The companion's answer line: its length in beats and its start after the phrase end.
ANSWER_TIMES = re.compile(r"-> answer of \d+ notes, ([\d.]+) beats, from ([+-][\d.]+) s after")


def _answer_over_at(comp: Companion, stall_s: float) -> float:
    """When the answer the companion has just decided is over (time.monotonic): its start
    after the phrase end and its beats at the clock's tempo from when it logged it, the
    stall's delay of the clock, and half a second for a loaded machine."""
    comp.wait_line("-> answer of", timeout=10)
    decided = time.monotonic()
    m = next(m for ln in comp.lines if (m := ANSWER_TIMES.search(ln)))
    return (decided + max(0.0, float(m[2])) + float(m[1]) * 60 / CLOCK_BPM + stall_s + 0.5)


def _stall(stall_s: float) -> None:
    """Every CPU held for ``stall_s`` (lab.stall): the
    JACK graph stalls, as on a stage machine that something else took, so the clock comes
    later on the companion's clock."""
    stall = subprocess.run([sys.executable, "-m", "lab.stall", str(stall_s),
                            str(stall_s + 0.01), "--for", "0.01"],
                           cwd=ROOT, capture_output=True, text=True, timeout=10)
    if "refused" in stall.stderr and not os.environ.get("CI"):
        pytest.skip(stall.stderr.strip())  # real-time scheduling: root or an rtprio limit
    assert stall.returncode == 0, stall.stderr


def run_clock_sync(env: dict, frames: int, tmp_path: Path, model_pkg: Path,
                   stall_s: float = 0.0) -> None:
    """The answer's first note on a clock beat; with ``stall_s``, the graph stalls once the
    answer is placed, and its notes from 0.4 s after its first on lie on the clock's eighths
    (those before may be early by the stall: the move is known some ticks after it)."""
    cfg = write_config(
        tmp_path / "config.yaml", model_pkg,
        listen={"tempo_bpm": 130.0, "phrase_end_beats": 1.0},  # not the clock's tempo
        answer={"length": 4, "min_beats": 4, "max_beats": 4, "seed": 5},
        # the call ends with its end note: a note-off lost in a JACK xrun cannot hang it
        time={"quantize": "1/8", "swing": 0.5, "end_note": END_NOTE},
        session={"enabled": False},
    )
    with clock_rig(env, frames, tmp_path, cfg,
                   ["-b", str(CLOCK_BPM), "-B", "-P"]) as rig:
        env, comp, performer = rig.env, rig.comp, rig.performer
        _transport(env, "play")
        time.sleep(3.0)  # five beats of clock before the call
        check_graph_runs(env, rig.clients, tmp_path)
        # a call at its own pace, off the clock's grid
        call = [(67, 0.0, 0.25), (69, 0.33, 0.25), (71, 0.61, 0.25), (74, 0.95, 0.25),
                (72, 1.27, 0.5), (END_NOTE, 1.9, 0.05)]
        events = sorted([(s, [0x90, p, 90]) for p, s, _ in call]
                        + [(s + d, [0x80, p, 0]) for p, s, d in call], key=lambda e: e[0])
        t0 = time.perf_counter() + 0.137
        for s, m in events:
            time.sleep(max(0.0, t0 + s - time.perf_counter()))
            performer.send_message(m)
        # once the answer is decided (placed on the clock's grid, not yet all played), the
        # stall; then until the answer is over
        over = _answer_over_at(comp, stall_s)
        if stall_s:
            _stall(stall_s)
        time.sleep(max(0.0, over - time.monotonic()))
        _transport(env, "stop")
        time.sleep(0.3)
    log = "\n".join(comp.lines)
    events, put_back = put_back_lost_ticks(read_dump(rig.dump_path), frames, log)
    beats = beat_frames(events)
    assert len(beats) >= 8, f"the judge heard {len(beats)} beats\n{log}"
    bpms = [float(b) for b in re.findall(r"on the MIDI clock at ([\d.]+) BPM", log)]
    assert bpms, f"the companion did not follow the clock:\n{log}"
    ons = [f for f, d in events if len(d) == 3 and d[0] & 0xF0 == 0x90 and d[2] > 0]
    assert ons, f"no answer:\n{log}"
    first = ons[0]
    off = min(abs(first - b) for b in beats) / RATE
    tol = max(0.003, frames / RATE)
    server = server_note(env, events, put_back, log)
    print(f"{frames} frames ({server}): clock followed at {bpms} BPM; answer's first note "
          f"{off * 1000:.2f} ms off a beat (tolerance {tol * 1000:.2f} ms)")
    assert_every_tick_heard(events, log, server)
    assert all(abs(b - CLOCK_BPM) <= 0.3 for b in bpms), f"{server}\n{log}"
    if not stall_s:
        assert off <= tol, f"{off * 1000:.2f} ms off the clock's beat ({server})\n{log}"
        return
    eighths = beat_frames(events, 12)
    later = [f for f in ons if f >= first + 0.4 * RATE]
    offs = [min(abs(f - e) for e in eighths) / RATE for f in later]
    print(f"after a {stall_s * 1000:.0f} ms stall: the answer's notes "
          + ", ".join(f"{o * 1000:.2f}" for o in offs) + " ms off the clock's eighths")
    assert len(later) >= 2, f"{len(later)} notes after the stall\n{log}"
    assert max(offs) <= tol, f"{max(offs) * 1000:.2f} ms off the clock's eighths after a " \
        f"{stall_s * 1000:.0f} ms stall ({server})\n{log}"
