"""Reliability in-process: arbitrary MIDI, every message type, into the engine and
the live wiring; and a soak of 500 calls and answers.

Property-based (hypothesis): whatever messages come, interleaved with normal calls, no
exception escapes, no note the companion started stays on, and the next clean call is
answered normally. The engine runs on the virtual clock (exact, fast); the live wiring
(input queue, engine and scheduler threads) on the in-process loopback with the real clock.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import CALLS, EngineRig, assert_all_off, call_messages, make_config, play, wait_for
from support import LOOP_BEAT as BEAT
from support import LOOP_TEMPO as TEMPO

from companion.config import Config
from companion.midi.loopback import LoopbackIn, LoopbackOut
from companion.realtime.live import Live

PHRASE_END_BEATS = 1.0
#: Seconds after which whatever the garbage played has ended as a phrase: a key held to the
#: held limit at the slowest beat the tempo from the calls may follow, then the longest wait.
_DEFAULTS = Config()
QUIET_S = (_DEFAULTS.listen.held_limit_beats * 60.0 / _DEFAULTS.time.auto_min_bpm
           + _DEFAULTS.time.phrase_end_max_s)

# -- every kind of MIDI message --------------------------------------------------------

ch = st.integers(0, 15)
data7 = st.integers(0, 127)
#: notes at the extremes and in the middle, often repeated (a key struck twice, held)
note = st.one_of(st.sampled_from([0, 1, 60, 64, 126, 127]), data7)

MESSAGES = st.one_of(
    st.builds(lambda c, n, v: mido.Message("note_on", channel=c, note=n, velocity=v),
              ch, note, data7),
    st.builds(lambda c, n, v: mido.Message("note_off", channel=c, note=n, velocity=v),
              ch, note, data7),
    st.builds(lambda c, n, v: mido.Message("polytouch", channel=c, note=n, value=v),
              ch, note, data7),
    st.builds(lambda c, cc, v: mido.Message("control_change", channel=c, control=cc, value=v),
              ch, st.one_of(st.sampled_from([1, 7, 64, 120, 121, 123, 127]), data7), data7),
    st.builds(lambda c, p: mido.Message("program_change", channel=c, program=p), ch, data7),
    st.builds(lambda c, v: mido.Message("aftertouch", channel=c, value=v), ch, data7),
    st.builds(lambda c, p: mido.Message("pitchwheel", channel=c, pitch=p), ch,
              st.integers(-8192, 8191)),
    st.builds(lambda d: mido.Message("sysex", data=d),
              st.one_of(st.lists(data7, max_size=16), st.lists(data7, min_size=1000,
                                                               max_size=4000))),
    st.builds(lambda f, v: mido.Message("quarter_frame", frame_type=f, frame_value=v),
              st.integers(0, 7), st.integers(0, 15)),
    st.builds(lambda p: mido.Message("songpos", pos=p), st.integers(0, 16383)),
    st.builds(lambda s: mido.Message("song_select", song=s), data7),
    st.sampled_from([mido.Message(k) for k in ("tune_request", "clock", "start", "continue",
                                                "stop", "active_sensing", "reset")]),
)

#: what happens, in order: garbage (seconds after the previous item, a message) or a call
ITEMS = st.lists(
    st.one_of(st.tuples(st.just("msg"), st.floats(0, 0.5), MESSAGES),
              st.tuples(st.just("call"), st.integers(0, len(CALLS) - 1))),
    max_size=60,
)


def virtual_rig(model, model_pkg, **sections) -> EngineRig:
    """The engine and player on the virtual clock at the calls' tempo, driven event by event
    like `respond`."""
    sections["listen"] = {"tempo_bpm": TEMPO, "phrase_end_beats": PHRASE_END_BEATS,
                          **sections.get("listen", {})}
    return EngineRig(model, make_config(model_pkg, **sections), seed=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(items=ITEMS, channel=st.sampled_from(["omni", 1, 10]))
def test_any_messages_then_a_clean_call_is_answered(model, model_pkg, items, channel):
    rig = virtual_rig(model, model_pkg, midi={"input_channel": channel})
    call_ch = 0 if channel == "omni" else channel - 1
    t = 0.0
    for item in items:
        if item[0] == "msg":
            t += item[1]
            rig.feed(t, item[2])
        else:
            for tm, m in call_messages(CALLS[item[1]], t, call_ch):
                rig.feed(tm, m)
            t = rig.clock.now()
    # quiet, then a clean call once what the garbage played has ended (lost note-offs too)
    t += QUIET_S + 4 * BEAT
    rig.until(t)
    before = len(rig.events_of("phrase_end"))
    call = call_messages(CALLS[0], t, call_ch)
    for tm, m in call:
        rig.feed(tm, m)
    released = call[-1][0]
    rig.until(released + (PHRASE_END_BEATS + 1 + 16 + 4) * BEAT)
    rig.player.flush()
    answers = rig.events_of("phrase_end")[before:]
    assert len(answers) == 1, answers
    a = answers[0]
    assert a["notes"] >= 1 and a["call"] == len(CALLS[0])
    assert released + PHRASE_END_BEATS * BEAT - 1e-9 <= a["t"] <= a["start"]
    assert rig.player.timeline.sounding == {}
    assert_all_off([m for _, m in rig.sent])
    ons = [m for tm, m in rig.sent if tm >= a["start"] - 1e-9 and m.type == "note_on"]
    assert len(ons) == a["notes"]
    assert all(0 <= m.note <= 127 and 1 <= m.velocity <= 127 for m in ons)


# -- the live wiring: threads, queue, passthrough, stop ---------------------------------


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(garbage=st.lists(MESSAGES, max_size=80), cut=st.booleans())
def test_live_wiring_survives_any_messages(model, model_pkg, garbage, cut):
    """Garbage at full speed (during an answer too), with passthrough on: the next clean call
    is answered, and after stop nothing is left sounding, echoed notes included."""
    cfg = make_config(model_pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1},
                      answer={"length": 4, "max_beats": 4, "min_beats": 1},
                      midi={"passthrough": True}, session={"enabled": False})
    inport, out = LoopbackIn(), LoopbackOut()
    events: list[tuple[str, float, dict]] = []
    logs: list[str] = []
    live = Live(cfg, model, inport, out, seed=2, log=logs.append,
                on_event=lambda k, t, **d: events.append((k, t, d)))
    live.start()
    try:
        play(inport, CALLS[1])
        if cut:  # the garbage lands while an answer plays
            wait_for(lambda: any(k == "note_on" for k, _, _ in events))
        for m in garbage:
            inport.deliver(m)
        # the performer lets go of everything (the garbage may have pressed keys), then plays
        inport.deliver(mido.Message("control_change", control=123, value=0))
        time.sleep(0.05)
        n = sum(k == "phrase_end" for k, _, _ in events)
        released = play(inport, CALLS[0])
        wait_for(lambda: sum(k == "phrase_end" for k, _, _ in events) > n)
        t_end, d_end = [(t, d) for k, t, d in events if k == "phrase_end"][-1]
        assert d_end["notes"] >= 1 and d_end["deadline"] >= released
        wait_for(lambda: not live.scheduler.busy(d_end["answer"]))
    finally:
        live.stop()
    assert_all_off([m for _, m in out.messages()])
    last = out.messages()[-1][1]
    assert last.type == "control_change" and last.control == 123
    assert not [ln for ln in logs if "could not answer" in ln], logs


# -- soak --------------------------------------------------------------------------------


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")  # pragma: no cover


def test_soak_500_calls_on_the_virtual_clock(model, model_pkg):
    """500 calls and answers back to back, hours of music on the compressed clock: memory
    flat (< 10 MB), every answer on the grid after its phrase end, no drift with time."""
    rig = virtual_rig(model, model_pkg, answer={"length": 4, "max_beats": 4, "min_beats": 1})
    t = 0.0
    rss = {}
    for i in range(500):
        if i == 50:
            gc.collect()
            rss["start"] = rss_kb()
        call = call_messages(CALLS[i % len(CALLS)], t)
        for tm, m in call:
            rig.feed(tm, m)
        released = call[-1][0]
        rig.until(released + (PHRASE_END_BEATS + 1 + 4 + 2) * BEAT)
        t = rig.clock.now() + 0.5 * BEAT
    rig.player.flush()
    gc.collect()
    rss["end"] = rss_kb()
    answers = rig.events_of("phrase_end")
    assert len(answers) == 500
    for a in answers:  # on the beat grid of its call, within a beat of deciding
        assert a["t"] <= a["start"] <= a["t"] + BEAT + 1e-6
    # every note played exactly at its planned time, early answers as late ones
    assert_all_off([m for _, m in rig.sent])
    growth_mb = (rss["end"] - rss["start"]) / 1024
    print(f"soak (virtual clock): 500 answers, {t / 3600:.2f} h of music, RSS "
          f"{rss['start'] / 1024:.1f} -> {rss['end'] / 1024:.1f} MB ({growth_mb:+.2f} MB)")
    assert growth_mb < 10


@pytest.mark.parametrize("calls", [500])
def test_soak_500_calls_through_the_live_threads(model, model_pkg, calls):
    """The real threads and clock on a compressed tempo (4800 BPM): 500 calls, each answered,
    RSS growth < 10 MB, and the answers' lateness the same at the end as at the start."""
    cfg = make_config(model_pkg, listen={"phrase_end_beats": 2, "chord_window_ms": 0},
                      answer={"length": 1, "max_beats": 1, "min_beats": 1, "max_note_beats": 0.5},
                      session={"enabled": False})
    cfg.listen.tempo_bpm = 4800.0  # beyond the config's range on purpose: a compressed clock
    beat = 60.0 / cfg.listen.tempo_bpm
    inport, out = LoopbackIn(), LoopbackOut()
    events: list[tuple[str, float, dict]] = []
    lock = threading.Lock()
    done = threading.Semaphore(0)

    def on_event(kind: str, t: float, **d) -> None:
        with lock:
            if kind in ("phrase_end", "note_on"):
                events.append((kind, t, d))
        if kind == "note_off" and live.engine.answer is not None and \
                d["answer"] == live.engine.answer.id and d["index"] == \
                len(live.engine.answer.notes) - 1:
            done.release()

    logs: list[str] = []
    live = Live(cfg, model, inport, out, seed=9, on_event=on_event, log=logs.append)
    live.start()
    rss = {}
    missed = 0
    try:
        for i in range(calls):
            if i == 50:
                gc.collect()
                rss["start"] = rss_kb()
            # a burst call; its rhythm does not matter here. It comes within ms of the
            # answers before, so not at their velocities (their calls'): the same pitch and
            # velocity that soon is the companion's own note coming back (realtime.echo)
            for p in (60 + i % 5, 64, 67):
                inport.deliver(mido.Message("note_on", note=p, velocity=60 + i % 40))
                inport.deliver(mido.Message("note_off", note=p))
            if not done.acquire(timeout=5.0):
                missed += 1
        gc.collect()
        rss["end"] = rss_kb()
    finally:
        live.stop()
    with lock:
        ev = list(events)
    answers = [d for k, _, d in ev if k == "phrase_end"]
    planned = {}
    for k, _t, d in ev:
        if k == "phrase_end":
            planned[d["answer"]] = d["start"]
    late = {}
    for k, t, d in ev:
        if k == "note_on" and d["index"] == 0:
            late[d["answer"]] = t - planned[d["answer"]]
    lateness = [late[a] for a in sorted(late)]
    first = statistics.median(lateness[:50])
    last = statistics.median(lateness[-50:])
    growth_mb = (rss["end"] - rss["start"]) / 1024
    print(f"soak (live threads, {cfg.listen.tempo_bpm:g} BPM): {len(answers)} answers, RSS "
          f"{rss['start'] / 1024:.1f} -> {rss['end'] / 1024:.1f} MB ({growth_mb:+.2f} MB), "
          f"first note lateness median {first * 1000:.2f} ms (first 50) vs "
          f"{last * 1000:.2f} ms (last 50), max {max(lateness) * 1000:.1f} ms")
    assert missed == 0 and len(answers) == calls, logs[-5:]
    assert growth_mb < 10
    assert abs(last - first) < 0.005  # no drift: deadlines are absolute
    assert all(x > -0.001 for x in lateness)  # never early
    assert not [ln for ln in logs if "could not answer" in ln or "ignored" in ln], logs[:5]
    assert_all_off([m for _, m in out.messages()])
    assert beat > 0


def test_backlog_is_dropped_counted_and_said_once(model, model_pkg):
    """20,000 messages at once, far faster than a model step each: the backlog is dropped
    (note-offs kept), counted, said in one warning, and never echoed or answered late."""
    cfg = make_config(model_pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1},
                      answer={"length": 2, "max_beats": 2, "min_beats": 1},
                      midi={"passthrough": True}, session={"enabled": False})
    inport, out = LoopbackIn(), LoopbackOut()
    events: list[tuple[str, float, dict]] = []
    logs: list[str] = []
    live = Live(cfg, model, inport, out, seed=2, log=logs.append,
                on_event=lambda k, t, **d: events.append((k, t, d)))
    live.start()
    try:
        sent = 0
        # the engine thread stalls at its first echo (a busy machine, made certain here)
        with live.scheduler.lock:
            for i in range(5000):
                p = 30 + i % 60
                for m in (mido.Message("note_on", note=p, velocity=70),
                          mido.Message("pitchwheel", pitch=i % 8000),
                          mido.Message("control_change", control=1, value=i % 128),
                          mido.Message("note_off", note=p)):
                    inport.deliver(m)
                    sent += 1
            time.sleep(0.3)
        flood_end = time.perf_counter()
        wait_for(lambda: any("input flood" in ln for ln in logs), timeout=30)
        wait_for(lambda: not live.scheduler.timeline.pending(), timeout=30)
        n = sum(k == "phrase_end" for k, _, _ in events)
        released = play(inport, CALLS[0])
        wait_for(lambda: sum(k == "phrase_end" for k, _, _ in events) > n)
        t_end = [t for k, t, _ in events if k == "phrase_end"][-1]
    finally:
        live.stop()
    (warning,) = [ln for ln in logs if "input flood" in ln]
    dropped = int(warning.split()[2])
    echoed_late = [t for t, m in out.messages() if m.type == "note_on" and m.channel == 0
                   and flood_end + 0.5 < t < released - 1 and 30 <= m.note < 90]
    print(f"backlog: {sent} messages at once, {dropped} dropped; next call decided "
          f"{t_end - released:.3f} s after its release")
    assert 0 < dropped < sent and live.dropped == dropped
    assert t_end - released < PHRASE_END_BEATS * BEAT + 0.5
    assert_all_off([m for _, m in out.messages()])
    assert echoed_late == [] or all(t < flood_end + 2.0 for t in echoed_late)
