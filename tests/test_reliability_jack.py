"""Reliability over real MIDI ports: `companion live` in a subprocess on a JACK
server (dummy driver), fed garbage bytes and floods, stopped by signals and killed, its
named ports unplugged and plugged back.

Bounds are generous where this two-core machine's load shows (the test's own stamping of
what it receives); the companion's own figures are read from its log.
"""

from __future__ import annotations

import re
import signal
import time

import mido
import pytest
from support import JACK_BEAT as BEAT
from support import JACK_CALL as CALL
from support import (
    PHRASE_END_BEATS,
    Companion,
    Heard,
    Performer,
    answer_latency,
    assert_matched,
    flood,
    jack_config,
    jack_env,
    jack_ports,
    jackd_log,
    note_ons,
    raw_rig,
    wait_answer_heard,
    wait_for,
    wait_quiet,
)

from companion.midi.input import open_input

pytestmark = pytest.mark.jack


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


# -- garbage bytes -----------------------------------------------------------------------

GARBAGE = [
    [0xF4], [0xF5], [0xFD], [0xF9],  # undefined status bytes
    [0x90, 60], [0x90], [0xB0, 123], [0xE0, 5], [0xC0],  # truncated messages
    [0x80, 200, 10], [0x90, 61, 255],  # data bytes with the top bit set
    [0x3C, 0x40], [0x00], [0x7F, 0x7F, 0x7F],  # data bytes with no status
    [0xF7], [0xFF, 0xFF, 0xFF], [0xF2, 1], [0xF3], [0xF1],
    [0xF0, 1, 2, 3], [0xF7],  # an unterminated sysex, then its end on its own
    [0xF0, 0x7E] + [0x55] * 3000 + [0xF7],  # a long one
    [0x90, 64, 100], [0x90, 64, 100], [0x80, 99, 0],  # a held key struck twice; a stray off
    [0x9F, 0, 127], [0x8F, 0, 0], [0x90, 127, 1], [0x80, 127, 0],
]


def test_garbage_bytes_neither_crash_nor_wedge(jack_server, monkeypatch, tmp_path, model_pkg):
    with raw_rig(jack_server, monkeypatch, tmp_path, model_pkg, "garbage") as (
            comp, performer, raw):
        for _ in range(3):
            for msg in GARBAGE:
                raw.send_message(msg)
                time.sleep(0.002)
        raw.send_message([0xB0, 123, 0])  # the keys the garbage pressed are let go
        time.sleep(0.5)
        assert comp.proc.poll() is None, "\n".join(comp.lines)
        wait_quiet(performer)
        latency = answer_latency(performer, comp)
        print(f"garbage: {3 * len(GARBAGE)} raw messages; next call answered {latency:.3f} s "
              f"after its release")
        assert latency < PHRASE_END_BEATS * BEAT + BEAT + 1.0


# -- a lost note-off ---------------------------------------------------------------------

#: The held limit of the test below, in beats (of JACK_BEAT: the tempo is fixed).
HELD_LIMIT_BEATS = 4


def test_a_lost_note_off_holds_the_call_only_until_the_held_limit(jack_server, monkeypatch,
                                                                 tmp_path, model_pkg):
    """`90 30 40` alone, then a call: answered once the stray key has been held the held
    limit, with nothing more played, and the log names the key."""
    with raw_rig(jack_server, monkeypatch, tmp_path, model_pkg, "stray",
                 listen={"held_limit_beats": HELD_LIMIT_BEATS}) as (comp, performer, raw):
        sent = time.monotonic()
        raw.send_message([0x90, 0x30, 0x40])
        released = performer.play(CALL)
        held_end = sent + HELD_LIMIT_BEATS * BEAT
        assert released < held_end  # the call alone would have ended sooner
        wait_answer_heard(comp, performer, 0, 0)
        first = note_ons(performer.received())[0][0]
        print(f"lost note-off: answered {first - held_end:.3f} s after the stray key's limit")
        assert held_end + PHRASE_END_BEATS * BEAT < first
        assert first < held_end + (PHRASE_END_BEATS + 1) * BEAT + 1.0  # 1 s: a loaded machine
        comp.wait_line(f"key C3 (channel 1) held {HELD_LIMIT_BEATS} beats without its note-off")
        assert comp.count(f"call of {1 + len(CALL)} notes") == 1, "\n".join(comp.lines)


# -- flood -------------------------------------------------------------------------------


def test_flood_is_dropped_not_played_late(jack_server, monkeypatch, tmp_path, model_pkg):
    # the session is saved often, so that each flood's rewrite of it is within its figure
    with raw_rig(jack_server, monkeypatch, tmp_path, model_pkg, "flood",
                 session={"save_every_s": 0.5}) as (comp, performer, raw):
        base = answer_latency(performer, comp)
        wait_quiet(performer)
        rss_before = rss_mb(comp.proc.pid)

        rss_floods = []
        for _ in range(3):  # later floods: memory stays (nearly) where the first one left it
            sent, flood_s, flood_end, flood_answer = flood(raw, performer, comp)
            rss_floods.append(rss_mb(comp.proc.pid))
        after = answer_latency(performer, comp)
        rss_after = rss_mb(comp.proc.pid)
    warnings = [ln for ln in comp.lines if "input flood" in ln]
    dropped = sum(int(re.search(r"input flood: (\d+)", ln).group(1)) for ln in warnings)
    late = flood_answer[0][0] - flood_end if flood_answer else None
    print(f"flood: {sent} messages in {flood_s:.2f} s, {dropped} dropped ({len(warnings)} "
          f"warning); flood's answer from {late if late is None else round(late, 3)} s after "
          f"it; RSS {rss_before:.1f} -> {' -> '.join(f'{r:.1f}' for r in rss_floods)} (floods) -> "
          f"{rss_after:.1f} MB; next call answered {after:.3f} s "
          f"after release (before the flood: {base:.3f} s)")
    assert sent >= 10_000 and flood_s < 2.0
    assert len(warnings) <= 3 and (dropped > 0) == (len(warnings) > 0)  # one per flood
    if flood_answer:  # what was heard is answered in time, the backlog never late
        assert late < PHRASE_END_BEATS * BEAT + BEAT + 1.5
    assert rss_after - rss_before < 8
    # Bounded: the session record keeps each message encoded (about 4 bytes, 40 kB a flood)
    # and the style memory its latest 2,048 curves (full after the first flood); anything
    # that kept a flood's messages or notes as objects (300+ bytes each) would add 3 MB or
    # more with every flood, and so did rewriting the session from an object per message.
    later = [b - a for a, b in zip(rss_floods, rss_floods[1:], strict=False)]
    assert max(later) < 1.5, later
    assert after < PHRASE_END_BEATS * BEAT + BEAT + 1.0


# -- signals -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_answer(jack_server, monkeypatch, tmp_path, model_pkg, sig):
    """Every sounding note off within 100 ms (the companion's own figure; this process's
    stamping of what it receives gets a looser bound), session file complete, exit 0."""
    env = jack_env(jack_server, monkeypatch)
    comp = Companion(env, "--config", str(jack_config(tmp_path, model_pkg, answer_beats=8)))
    performer = None
    try:
        comp.wait_ready()
        performer = Performer()
        n = len(performer.received())
        performer.play(CALL)
        deadline = time.monotonic() + 10
        while not note_ons(performer.received()[n:]):
            assert time.monotonic() < deadline, "no answer:\n" + "\n".join(comp.lines)
            time.sleep(0.002)
        time.sleep(0.3)  # well inside the 8-beat answer
        t_sig = time.monotonic()
        comp.proc.send_signal(sig)
        rc = comp.proc.wait(timeout=15)
        time.sleep(0.3)
        got = performer.received()
    finally:
        if performer is not None:
            performer.close()
        comp.stop()
    assert rc == 0, "\n".join(comp.lines)
    before = [(t, m) for t, m in got if t < t_sig]
    sounding = {m.note for t, m in before if m.type == "note_on" and m.velocity > 0} - {
        m.note for t, m in before if m.type == "note_off"}
    offs = [t for t, m in got if t >= t_sig and (
        m.type == "note_off" or (m.type == "control_change" and m.control == 123))]
    assert offs, "no note-off after the signal"
    outside_ms = (offs[-1] - t_sig) * 1000
    (line,) = [ln for ln in comp.lines if "every note off" in ln]
    inside_ms = float(re.search(r"off ([\d.]+) ms", line).group(1))
    print(f"{signal.Signals(sig).name}: every note off {inside_ms:.1f} ms after the signal "
          f"(companion's clock), last note-off received {outside_ms:.1f} ms after sending it; "
          f"{len(sounding)} notes were sounding")
    assert inside_ms < 100
    assert outside_ms < 500
    assert not [m for t, m in got if t > t_sig + 0.25 and m.type == "note_on"]
    assert_matched(got, jackd_log(env))
    # the session file: both tracks, the whole call, every answer note closed
    (path,) = (tmp_path / "sessions").glob("session-*.mid")
    mf = mido.MidiFile(path)
    assert [t.name for t in mf.tracks] == ["performer", "companion"]
    heard = [m.note for m in mf.tracks[0] if m.type == "note_on" and m.velocity > 0]
    assert heard == [p for p, _, _ in CALL]
    played = [m for m in mf.tracks[1] if not m.is_meta]
    assert any(m.type == "note_on" for m in played)
    assert_matched([(0, m) for m in played])
    assert played[-1].type == "control_change" and played[-1].control == 123


class Synth(Heard):
    """A JACK client of this test with an input port (a synth, a DAW track)."""

    def __init__(self, name: str = "synth"):
        super().__init__()
        self.backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
        self.port = open_input("UNIX_JACK", name, virtual=True, client_name=name,
                               callback=self._heard)

    def close(self) -> None:
        self.port.close()


class Keys:
    """A JACK client of this test with an output port (a keyboard)."""

    def __init__(self, name: str = "keys"):
        self.backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
        self.port = self.backend.open_output(name, virtual=True, client_name=name)

    def play(self, notes) -> float:
        t0 = time.monotonic() + 0.05
        events = []
        for p, s, d in notes:
            events.append((s, 1, mido.Message("note_on", note=p, velocity=90)))
            events.append((s + d, 0, mido.Message("note_off", note=p)))
        last = t0
        for s, _, m in sorted(events, key=lambda e: (e[0], e[1])):
            time.sleep(max(0.0, t0 + s * BEAT - time.monotonic()))
            last = time.monotonic()
            self.port.send(m)
        return last

    def close(self) -> None:
        self.port.close()


def wait_answer(synth: Synth, n: int, comp: Companion, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not note_ons(synth.received()[n:]):
        assert time.monotonic() < deadline, "no answer:\n" + "\n".join(comp.lines[-20:])
        time.sleep(0.01)


def test_after_sigkill_the_next_start_sends_all_notes_off_first(
        jack_server, monkeypatch, tmp_path, model_pkg):
    """SIGKILL mid-answer leaves a note on; the next start's first message is All Notes Off.
    The session was flushed as it went: the killed run's file has the call and the answer
    up to its last flush."""
    env = jack_env(jack_server, monkeypatch)
    cfg = jack_config(tmp_path, model_pkg, answer_beats=8, session={"save_every_s": 0.5})
    synth = Synth()
    comp = Companion(env, "--config", str(cfg), "--output", "synth")
    try:
        comp.wait_ready()
        performer_out = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
        names = [n for n in performer_out.get_output_names()
                 if n.startswith("companion") and n.endswith(":in")]
        to = performer_out.open_output(names[0])
        time.sleep(0.3)
        n = len(synth.received())
        for p, _s, d in CALL:
            to.send(mido.Message("note_on", note=p, velocity=90))
            time.sleep(d * BEAT)
            to.send(mido.Message("note_off", note=p))
            time.sleep(0.1 * BEAT)
        to.close()
        wait_answer(synth, n, comp)
        time.sleep(1.2)  # two autosaves into the answer
        comp.proc.send_signal(signal.SIGKILL)
        comp.proc.wait(timeout=10)
        got = synth.received()
        ons = {m.note for _, m in got if m.type == "note_on" and m.velocity > 0}
        offs = {m.note for _, m in got if m.type == "note_off"}
        assert comp.proc.returncode == -signal.SIGKILL

        (path,) = (tmp_path / "sessions").glob("session-*.mid")
        mf = mido.MidiFile(path)
        heard = [m.note for m in mf.tracks[0] if m.type == "note_on" and m.velocity > 0]
        assert heard == [p for p, _, _ in CALL]
        assert any(m.type == "note_on" for m in mf.tracks[1])

        # the JACK server notices the killed client and drops it
        wait_for(lambda: (ports := jack_ports(env)) is not None
                 and not any(p.startswith("companion") for p in ports),
                 10, "the killed companion's ports are still there")
        with synth.lock:
            synth.got.clear()
        comp2 = Companion(env, "--config", str(cfg), "--output", "synth")
        try:
            comp2.wait_ready()
            deadline = time.monotonic() + 5
            while not synth.received() and time.monotonic() < deadline:
                time.sleep(0.01)
            first = synth.received()[0][1]
        finally:
            assert comp2.stop() == 0
    finally:
        synth.close()
        comp.stop()
    print(f"SIGKILL mid-answer left {len(ons - offs)} notes on the synth; the next start's "
          f"first message: {first}")
    assert first.type == "control_change" and first.control == 123


def test_named_ports_unplugged_and_back(jack_server, monkeypatch, tmp_path, model_pkg):
    """Both named ports' clients quit: one warning each, the companion keeps running; they
    come back: it reconnects by name and answers again."""
    env = jack_env(jack_server, monkeypatch)
    keys, synth = Keys(), Synth()
    comp = Companion(env, "--config", str(jack_config(tmp_path, model_pkg)), "--input", "keys",
                     "--output", "synth")
    try:
        comp.wait_ready()
        time.sleep(0.3)
        keys.play(CALL)
        wait_answer_heard(comp, synth, 0, 0)
        keys.close()
        synth.close()
        t_gone = time.monotonic()
        deadline = t_gone + 10
        while sum("is gone" in ln for ln in comp.lines) < 2:
            assert time.monotonic() < deadline, "\n".join(comp.lines)
            time.sleep(0.05)
        time.sleep(2.5)  # the watcher looks twice more: no second warning
        assert comp.proc.poll() is None
        gone = [ln for ln in comp.lines if "is gone" in ln]
        assert len(gone) == 2 and any("input" in g for g in gone) and any(
            "output" in g for g in gone)

        keys, synth = Keys(), Synth()
        t_back = time.monotonic()
        deadline = t_back + 10
        while sum("is back" in ln for ln in comp.lines) < 2:
            assert time.monotonic() < deadline, "\n".join(comp.lines)
            time.sleep(0.05)
        reconnect_s = time.monotonic() - t_back
        time.sleep(0.3)
        keys.play(CALL)
        wait_answer(synth, 0, comp)
    finally:
        keys.close()
        synth.close()
        rc = comp.stop()
    print(f"ports: gone said once each; reconnected {reconnect_s:.2f} s after they came back")
    assert rc == 0, "\n".join(comp.lines)
    assert sum("is gone" in ln for ln in comp.lines) == 2
    assert not [ln for ln in comp.lines if "Traceback" in ln]
