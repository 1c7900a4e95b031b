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
import time
from pathlib import Path

import mido
import pytest
from support import (
    ANSWER_BEATS,
    MAX_NOTE_BEATS,
    PHRASE_END_BEATS,
    ROOT,
    Companion,
    Performer,
    assert_matched,
    jack_env,
    jackd_log,
    note_ons,
    wait_answer_heard,
    write_config,
)
from support import JACK_BEAT as BEAT
from support import JACK_CALL as CALL
from support import JACK_CALL2 as CALL2
from support import JACK_TEMPO as TEMPO

pytestmark = pytest.mark.jack

#: A message the companion sent just before it handled SIGTERM may still be on its way (and
#: this process may be slow to stamp it on a loaded machine); an answer that went on playing
#: would still show: it has notes for seconds after this.
IN_FLIGHT_S = 0.25

@pytest.fixture
def live_config(tmp_path, model_pkg) -> Path:
    return write_config(
        tmp_path / "config.yaml", model_pkg,
        listen={"tempo_bpm": TEMPO, "phrase_end_beats": PHRASE_END_BEATS},
        answer={"length": ANSWER_BEATS, "min_beats": 1, "max_beats": ANSWER_BEATS, "seed": 3,
                "max_note_beats": MAX_NOTE_BEATS},
        session={"folder": str(tmp_path / "sessions")},
    )


# Every message of both calls and answers must arrive: 21 ms cycles (1024 frames), so that
# a client descheduled for a few ms on a busy CI machine is not an xrun, which drops that
# cycle's MIDI (a lost note-off: no phrase end, no answer).
@pytest.mark.parametrize("jack_server", [1024], indirect=True)
def test_call_and_response_over_jack(jack_server, monkeypatch, tmp_path, live_config):
    jack_env(jack_server, monkeypatch)
    comp = Companion(jack_server, "--config", str(live_config))
    performer = None
    try:
        comp.wait_ready()
        performer = Performer()

        # 1. a phrase: the answer comes after the phrase end, and not before
        released = performer.play(CALL)
        wait_answer_heard(comp, performer, 0, 0)
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


#: Two bars of quarters and eighths at 160 BPM, the last note held to the bar line.
TRADE_BEAT = 0.375
TRADE_CALL = [(62, 0, 0.95), (66, 1, 0.45), (69, 1.5, 0.45), (71, 2, 0.95), (69, 3, 0.95),
              (67, 4, 0.45), (66, 4.5, 0.45), (64, 5, 0.95), (62, 6, 1.95)]


@pytest.mark.parametrize("jack_server", [1024], indirect=True)
def test_trading_two_bars_over_jack(jack_server, monkeypatch, tmp_path, model_pkg):
    """Trading bars (answer.start: bar) with real ports, at 160 BPM: each two-bar call is
    answered on the bar line it ends on (within 1/16 beat and a period each way), for two
    bars, over before the next call begins on the bar line after them. The first call's
    first bar may pass for a call of one bar (nothing says otherwise yet): one note at most,
    then the call goes on."""
    jack_env(jack_server, monkeypatch)
    cfg = write_config(tmp_path / "config.yaml", model_pkg,
                       listen={"tempo_bpm": 60 / TRADE_BEAT},
                       answer={"start": "bar", "seed": 3},
                       session={"enabled": False})
    comp = Companion(jack_server, "--config", str(cfg))
    performer = None
    try:
        comp.wait_ready()
        performer = Performer()
        slack = TRADE_BEAT / 16 + 2 * 1024 / 48000
        for turn in range(2):
            heard = len(performer.received())
            # a performer's touch (a fixed velocity playing the answer's first note in unison
            # on the bar line reads as the companion's own note coming back: realtime.echo)
            performer.play(TRADE_CALL, TRADE_BEAT, lambda i: 70 + 9 * (i % 4))
            line = performer.started + 8 * TRADE_BEAT
            next_call = line + 8 * TRADE_BEAT
            time.sleep(max(0.0, next_call - time.monotonic()))
            got = performer.received()[heard:]
            ons = [t for t, _ in note_ons(got)]
            answer = [t for t in ons if t > line - slack]
            assert answer, "no answer:\n" + "\n".join(comp.lines)
            print(f"call {turn + 1}: answer's first note {1000 * (answer[0] - line):+.1f} ms "
                  f"from the bar line ({len(ons) - len(answer)} notes before it)")
            assert abs(answer[0] - line) <= slack, (answer[0] - line, "\n".join(comp.lines))
            # the first call's first bar may pass for a call of one bar: one note at most
            # before the call goes on; the second call is known to be two bars long
            assert len(ons) - len(answer) <= (1 if turn == 0 else 0), "\n".join(comp.lines)
            assert all(t < next_call for t, _ in got), "the answer runs into the next call"
            assert_matched(got)
        log = "\n".join(comp.lines)
        assert log.count("8 beats, from +0.030 s") == 2, log
    finally:
        if performer is not None:
            performer.close()
        comp.stop()
