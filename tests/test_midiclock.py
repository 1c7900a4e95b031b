"""Following a MIDI clock on a fake clock: tempo through jitter, the beat grid, transport."""

from __future__ import annotations

import mido
import numpy as np
import pytest

from companion.engine.midiclock import LOST_S, ClockFollower

TICK = mido.Message("clock")


def ticks(f: ClockFollower, t0: float, bpm: float, n: int, jitter_s: float = 0.0,
          seed: int = 0) -> float:
    """``n`` ticks from ``t0``; returns the time the next tick is due."""
    rng = np.random.default_rng(seed)
    per = 60.0 / bpm / 24
    for i in range(n):
        f.feed(TICK, t0 + i * per + (rng.uniform(-jitter_s, jitter_s) if jitter_s else 0.0))
    return t0 + n * per


def test_tempo_is_smoothed_against_jitter():
    f = ClockFollower(window=48)
    end = ticks(f, 100.0, 100.0, 96, jitter_s=0.002)  # +-2 ms on a 25 ms tick
    assert f.bpm(end) == pytest.approx(100.0, rel=0.005)
    assert f.beat_s(end) == pytest.approx(0.6, rel=0.005)


def test_beats_follow_start_and_the_grid():
    f = ClockFollower()
    f.feed(mido.Message("start"), 9.99)
    end = ticks(f, 10.0, 100.0, 24 * 2 + 5, jitter_s=0.002, seed=1)  # 2 beats and 5 ticks
    # the next beat is beat 3, at 10 + 3 * 0.6, within a millisecond despite the jitter
    assert f.next_beat(end) == pytest.approx(11.8, abs=0.001)
    end = ticks(f, end, 100.0, 24, jitter_s=0.002, seed=2)
    assert f.next_beat(end) == pytest.approx(12.4, abs=0.001)
    assert f.beat_s(end) == pytest.approx(0.6, rel=0.002)


def test_tempo_change_is_followed():
    f = ClockFollower(window=24)
    end = ticks(f, 0.0, 90.0, 48)
    end = ticks(f, end, 150.0, 48)
    assert f.bpm(end) == pytest.approx(150.0, rel=0.002)


def test_stop_continue_and_song_position():
    f = ClockFollower()
    f.feed(mido.Message("start"), 0.0)
    end = ticks(f, 0.0, 120.0, 30)  # 1.25 beats at 0.5 s a beat
    f.feed(mido.Message("stop"), end)
    assert f.next_beat(end) is None  # stopped: no grid...
    end = ticks(f, end, 120.0, 10)  # ...but the tempo still comes from the ticks
    assert f.bpm(end) == pytest.approx(120.0)
    # continue from song position 6 sixteenths = 1.5 beats: the next tick is 36 ticks in
    f.feed(mido.Message("songpos", pos=6), end)
    f.feed(mido.Message("continue"), end)
    ticks(f, end, 120.0, 3)
    assert f.next_beat(end) == pytest.approx(end + 0.25)  # half a beat to beat 2


def test_a_clock_without_start_counts_from_its_first_tick():
    f = ClockFollower()
    end = ticks(f, 5.0, 120.0, 30)
    assert f.next_beat(end) == pytest.approx(6.0)


def test_no_clock_or_a_lost_clock():
    f = ClockFollower()
    assert f.beat_s(0.0) is None and f.next_beat(0.0) is None
    f.feed(TICK, 1.0)
    assert f.beat_s(1.0) is None  # one tick is no tempo
    end = ticks(f, 1.0 + 1 / 48, 120.0, 10)
    assert f.beat_s(end) is not None
    assert f.beat_s(end + LOST_S + 0.1) is None  # gone: the internal tempo takes over
    # it comes back at another tempo: the old ticks do not bend the new line
    end2 = ticks(f, end + 5.0, 80.0, 20)
    assert f.bpm(end2) == pytest.approx(80.0)


def test_ticks_too_far_apart_or_too_close_are_no_tempo():
    """Two stray ticks 0.23 s apart once made a 10.7 BPM clock, and an answer spread over
    11 s (hypothesis found it); the clock is believed between 20 and 400 BPM."""
    f = ClockFollower()
    f.feed(TICK, 0.6)
    f.feed(TICK, 0.834)
    assert f.beat_s(0.9) is None and f.next_beat(0.9) is None
    g = ClockFollower()
    end = ticks(g, 1.0, 600.0, 30)  # 600 BPM: 4 ms ticks
    assert g.beat_s(end) is None
    for bpm in (20.5, 399.0):  # the range's ends are tempi
        h = ClockFollower()
        end = ticks(h, 1.0, bpm, 30)
        assert h.bpm(end) == pytest.approx(bpm)


def test_engine_goes_back_to_its_tempo_when_the_clock_goes(model, model_pkg):
    from support import make_config

    from companion.engine.engine import Engine
    from companion.realtime.clock import VirtualClock
    from companion.realtime.scheduler import VirtualScheduler

    cfg = make_config(model_pkg, listen={"tempo_bpm": 130.0, "phrase_end_beats": 1.0})
    clock = VirtualClock()
    e = Engine(model, cfg, VirtualScheduler(lambda m: None, clock, 0), clock, 2)

    def call(t0: float) -> float:
        for i, p in enumerate((62, 64, 66, 67)):
            clock.set(t0 + 0.3 * i)
            e.on_message(mido.Message("note_on", note=p, velocity=80), t0 + 0.3 * i)
            e.on_message(mido.Message("note_off", note=p), t0 + 0.3 * i + 0.2)
        return t0 + 1.2

    events = [(0.025 * i, TICK) for i in range(24 * 8)]  # 100 BPM, until 4.8 s
    for i, p in enumerate((62, 64, 66, 67)):
        events += [(2.3 + 0.3 * i, mido.Message("note_on", note=p, velocity=80)),
                   (2.5 + 0.3 * i, mido.Message("note_off", note=p))]
    for t, m in sorted(events, key=lambda ev: ev[0]):
        clock.set(t)
        e.on_message(m, t)
    assert e.beat_s == pytest.approx(0.6)
    t = call(10.0)  # the clock stopped at 4.8 s
    assert e.beat_s == pytest.approx(60.0 / 130.0)
    assert e.next_deadline() == pytest.approx(t - 0.3 + 0.2 + 60.0 / 130.0)


def test_not_clock_messages():
    assert ClockFollower().feed(mido.Message("note_on"), 0.0) is False


def test_engine_answers_on_the_clocks_beats(model, model_pkg):
    """On a virtual clock: ticks at 100 BPM from t = 0.31 s, a call played off the grid at
    another pace; the answer starts on a clock beat, its onsets on the clock's 1/8 grid."""
    from support import make_config

    from companion.engine.engine import Engine
    from companion.realtime.clock import VirtualClock
    from companion.realtime.scheduler import VirtualScheduler

    cfg = make_config(model_pkg, listen={"tempo_bpm": 130.0, "phrase_end_beats": 1.0},
                      answer={"length": 4, "max_beats": 4},
                      time={"quantize": "1/8", "swing": 0.5})
    clock = VirtualClock()
    e = Engine(model, cfg, VirtualScheduler(lambda m: None, clock, 0), clock, 2)
    per = 0.6 / 24
    t0 = 0.31
    e.on_message(mido.Message("start"), t0 - 0.001)
    notes = [(62, 1.0), (64, 1.33), (66, 1.61), (67, 1.95)]
    events = [(t0 + i * per, TICK) for i in range(24 * 6)]
    for p, t in notes:
        events += [(t, mido.Message("note_on", note=p, velocity=80)),
                   (t + 0.2, mido.Message("note_off", note=p))]
    answer = None
    for t, m in sorted(events, key=lambda e: e[0]):
        clock.set(t)
        e.on_message(m, t)
        d = e.next_deadline()
        if answer is None and d is not None and d <= t:
            answer = e.poll(t)
    assert answer is not None
    assert e.beat_s == pytest.approx(0.6)
    k = (answer.start - t0) / 0.6
    assert k == pytest.approx(round(k), abs=1e-6)
    for n in answer.notes:
        h = (n.start - t0) / 0.3
        assert h == pytest.approx(round(h), abs=1e-6)


def test_lost_ticks_do_not_shift_the_grid():
    f = ClockFollower()
    f.feed(mido.Message("start"), 0.0)
    per = 0.5 / 24
    kept = [i for i in range(60) if i not in (30, 41, 42)]  # three ticks lost on the way
    for i in kept:
        f.feed(TICK, i * per + (0.002 if i % 2 else 0.0))
    assert f.lost == 3
    assert f.next_beat(59 * per) == pytest.approx(3 * 0.5, abs=0.002)


def test_ticks_held_up_and_then_delivered_in_a_burst_are_not_lost():
    f = ClockFollower()
    f.feed(mido.Message("start"), 0.0)
    per = 0.5 / 24
    for i in range(30):
        f.feed(TICK, i * per)
    for i in range(30, 40):  # held up: all ten arrive together, when tick 39 was due
        f.feed(TICK, 39 * per + 0.0001 * (i - 30))
    for i in range(40, 60):
        f.feed(TICK, i * per)
    assert f.lost == 0
    assert f.next_beat(59 * per) == pytest.approx(3 * 0.5, abs=0.002)
