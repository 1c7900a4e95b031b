"""Following a MIDI clock on a fake clock: tempo through jitter, the beat grid, transport."""

from __future__ import annotations

import math

import mido
import numpy as np
import pytest

from companion.engine.midiclock import (
    JUDGE_TICKS,
    LOST_S,
    REFINE_TICKS,
    STEP_TICKS,
    ClockFollower,
)

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
    """The clock is believed between 20 and 400 BPM: two stray ticks 0.23 s apart (10.7 BPM)
    are no tempo, and neither are ticks 4 ms apart (600 BPM)."""
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
    from support import EngineRig, make_config

    cfg = make_config(model_pkg, listen={"tempo_bpm": 130.0, "phrase_end_beats": 1.0})
    rig = EngineRig(model, cfg, 2)
    e = rig.engine

    def call(t0: float) -> float:
        for i, p in enumerate((62, 64, 66, 67)):
            rig.at(t0 + 0.3 * i, mido.Message("note_on", note=p, velocity=80))
            rig.at(t0 + 0.3 * i + 0.2, mido.Message("note_off", note=p))
        return t0 + 1.2

    events = [(0.025 * i, TICK) for i in range(24 * 8)]  # 100 BPM, until 4.8 s
    for i, p in enumerate((62, 64, 66, 67)):
        events += [(2.3 + 0.3 * i, mido.Message("note_on", note=p, velocity=80)),
                   (2.5 + 0.3 * i, mido.Message("note_off", note=p))]
    for t, m in sorted(events, key=lambda ev: ev[0]):
        rig.at(t, m)
    assert e.beat_s == pytest.approx(0.6)
    t = call(10.0)  # the clock stopped at 4.8 s
    assert e.beat_s == pytest.approx(60.0 / 130.0)
    assert e.next_deadline() == pytest.approx(t - 0.3 + 0.2 + 60.0 / 130.0)


def test_not_clock_messages():
    assert ClockFollower().feed(mido.Message("note_on"), 0.0) is False


def test_engine_answers_on_the_clocks_beats(model, model_pkg):
    """On a virtual clock: ticks at 100 BPM from t = 0.31 s, a call played off the grid at
    another pace; the answer starts on a clock beat, its onsets on the clock's 1/8 grid."""
    from support import EngineRig, make_config

    cfg = make_config(model_pkg, listen={"tempo_bpm": 130.0, "phrase_end_beats": 1.0},
                      answer={"length": 4, "max_beats": 4},
                      time={"quantize": "1/8", "swing": 0.5})
    rig = EngineRig(model, cfg, 2)
    e = rig.engine
    per = 0.6 / 24
    t0 = 0.31
    rig.at(t0 - 0.001, mido.Message("start"))
    notes = [(62, 1.0), (64, 1.33), (66, 1.61), (67, 1.95)]
    events = [(t0 + i * per, TICK) for i in range(24 * 6)]
    for p, t in notes:
        events += [(t, mido.Message("note_on", note=p, velocity=80)),
                   (t + 0.2, mido.Message("note_off", note=p))]
    answer = None
    for t, m in sorted(events, key=lambda e: e[0]):
        rig.at(t, m)
        d = e.next_deadline()
        if answer is None and d is not None and d <= t:
            answer = rig.poll(t)
    assert answer is not None
    assert e.beat_s == pytest.approx(0.6)
    k = (answer.start - t0) / 0.6
    assert k == pytest.approx(round(k), abs=1e-6)
    for n in answer.notes:
        h = (n.start - t0) / 0.3
        assert h == pytest.approx(round(h), abs=1e-6)


def test_an_answer_moves_with_a_clock_that_moved(model, model_pkg):
    """On a virtual clock: ticks at 100 BPM; right after the answer is decided, the clock
    comes 70 ms later (a JACK graph that stalled, after the answer was placed on its grid).
    The notes still to play once the move is judged lie on the later clock's 1/8 grid."""
    from support import EngineRig, make_config

    cfg = make_config(model_pkg, listen={"tempo_bpm": 130.0, "phrase_end_beats": 1.0},
                      answer={"length": 4, "max_beats": 4},
                      time={"quantize": "1/8", "swing": 0.5})
    rig = EngineRig(model, cfg, 2)
    e = rig.engine
    per, t0, stall = 0.6 / 24, 0.31, 0.07
    rig.at(t0 - 0.001, mido.Message("start"))
    events = [(t0 + i * per, TICK) for i in range(24 * 10)]
    for p, t in [(62, 1.0), (64, 1.33), (66, 1.61), (67, 1.95)]:
        events += [(t, mido.Message("note_on", note=p, velocity=80)),
                   (t + 0.2, mido.Message("note_off", note=p))]
    answer, late = None, 0.0
    for t, m in sorted(events, key=lambda ev: ev[0]):
        rig.at(t + late, m)
        d = e.next_deadline()
        if answer is None and d is not None and d <= t:
            answer = rig.poll(t)
            late = stall
            decided = t
    rig.to(t0 + 24 * 10 * per)
    assert answer is not None
    assert e.midiclock.moved == pytest.approx(stall, abs=1e-6)
    judged = decided + stall + (JUDGE_TICKS + 1) * per
    ons = [t for t, m in rig.sent if m.type == "note_on" and t > judged]
    assert len(ons) >= 3, (rig.sent, decided)
    for t in ons:
        h = (t - t0 - stall) / 0.3
        assert h == pytest.approx(round(h), abs=1e-6), (t, ons)


@pytest.mark.parametrize(("frames", "need"), [(256, 2), (1024, JUDGE_TICKS)])
def test_a_stall_is_judged_as_soon_as_the_band_allows(frames, need):
    """Stamps on JACK cycles of ``frames`` (100 BPM), then from tick 150 every tick 70 ms
    later (a graph that stalled): the move is judged on the ``need``-th tick after the gap,
    the 2nd where cycles are short (the mean of two is known within 2.5 ms), the 6th at 1024
    frames; and it is the stall, within a cycle."""
    cycle, per, stall = frames / 48000, 0.6 / 24, 0.07
    f = ClockFollower()
    f.feed(mido.Message("start"), 0.0)
    judged_at = None
    for i in range(200):
        t = math.ceil(i * per / cycle) * cycle + (stall if i >= 150 else 0.0)
        f.feed(TICK, t)
        if judged_at is None and f.moved:
            judged_at = i - 150 + 1
    assert judged_at == need
    assert f.moved == pytest.approx(stall, abs=cycle)


def test_a_judged_move_is_refined_by_the_ticks_after_it():
    """Stamps on 256-frame cycles (100 BPM), from tick 150 on 60-90 ms later: the move,
    judged from the first two ticks after the gap (its mean within a few ms), is refined
    with each tick that follows up to REFINE_TICKS; then it is the stall within 1 ms for
    every one of 50 stalls and phases (0.34 ms at worst; not refined: 1.73 ms)."""
    per = 0.6 / 24
    worst = 0.0
    for seed in range(50):
        rng = np.random.default_rng(seed)
        stall, t0 = rng.uniform(0.06, 0.09), rng.uniform(0.0, 0.05)
        i = np.arange(150 + REFINE_TICKS + 2)
        sent = t0 + per * i + np.where(i >= 150, stall, 0.0)
        f = ClockFollower()
        f.feed(mido.Message("start"), 0.0)
        before = None
        for k, t in enumerate(cycle_stamps(sent, 256, seed=seed)):
            if k == 150:
                before = f.moved
            f.feed(TICK, float(t))
        worst = max(worst, abs(f.moved - before - stall))
    assert worst <= 0.001, worst


def test_a_tick_lost_on_the_way_is_not_inferred():
    """A clock is a count: with tick 30 lost, the next beat comes one tick later, as on any
    receiver (a lost tick and a clock that came later look alike)."""
    f = ClockFollower()
    f.feed(mido.Message("start"), 0.0)
    per = 0.5 / 24
    for i in range(60):
        if i != 30:
            f.feed(TICK, i * per + (0.002 if i % 2 else 0.0))
    assert f.next_beat(59 * per) == pytest.approx(3 * 0.5 + per, abs=0.002)


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
    assert f.next_beat(59 * per) == pytest.approx(3 * 0.5, abs=0.002)


# -- stamps quantised to the MIDI system's cycles ----------------------------------------
# Over JACK, RtMidi stamps a message when its client's process callback runs: every tick
# that a cycle carries gets that cycle's stamp (the start of the cycle after the one it was
# sent in, plus the callback's wake-up jitter, alike for the whole cycle). At 1024 frames a
# cycle is 21.3 ms, near a 100 BPM tick (25 ms): cycles carry 0, 1 or 2 ticks.

RATE = 48000
PERIODS = (64, 256, 512, 1024)


def cycle_stamps(times: np.ndarray, frames: int, seed: int = 0,
                 wake_s: float = 0.0003) -> np.ndarray:
    """The stamps of messages sent at ``times`` through a system of ``frames`` a cycle."""
    q = frames / RATE
    cycle = np.floor(times / q).astype(int) + 1
    wake = np.random.default_rng(seed).uniform(0.0, wake_s, cycle.max() + 1)
    return cycle * q + wake[cycle]


def tolerance_s(frames: int) -> float:
    """Where a beat may be found: within max(3 ms, one period)."""
    return max(0.003, frames / RATE)


def follow(f: ClockFollower, times: np.ndarray, frames: int, bpm_at, beats: np.ndarray,
           settle_s: float = 2.4) -> tuple[float, float]:
    """Feed the ticks sent at ``times``, stamped per cycle; after ``settle_s`` of clock (four
    beats at 100 BPM: two windows of 48 ticks, the least the tempo comes from), ask at
    every tick for the tempo and the next beat. Returns the worst tempo error (BPM, against
    ``bpm_at(t)``) and the worst beat error (s, against the nearest of ``beats``)."""
    stamps = cycle_stamps(times, frames)
    worst_bpm = worst_beat = 0.0
    for sent, t in zip(times, stamps, strict=True):
        f.feed(TICK, float(t))
        if sent - times[0] < settle_s:
            continue
        worst_bpm = max(worst_bpm, abs(f.bpm(t) - bpm_at(sent)))
        b = f.next_beat(t + 0.05)
        if b > times[-1]:
            continue  # past the last tick sent: no beat to hold it against
        worst_beat = max(worst_beat, float(np.min(np.abs(beats - b))))
    return worst_bpm, worst_beat


@pytest.mark.parametrize("frames", PERIODS)
def test_a_steady_clock_is_followed_at_every_period(frames):
    per = 0.6 / 24
    times = 3.0123 + per * np.arange(24 * 40)  # 100 BPM, 24 s
    f = ClockFollower(window=48)
    f.feed(mido.Message("start"), 3.0)
    worst_bpm, worst_beat = follow(f, times, frames, lambda t: 100.0, times[::24])
    assert worst_bpm <= 0.3, worst_bpm
    assert worst_beat <= tolerance_s(frames), (worst_beat, frames)


@pytest.mark.parametrize("frames", (64, 1024))
def test_a_slowly_drifting_clock_is_followed(frames):
    """99 -> 101 BPM over a minute: tick i is sent where the tempo's integral reaches it."""
    ticks_per_s = lambda t: (99.0 + 2.0 * t / 60.0) / 60.0 * 24  # noqa: E731
    grid = np.linspace(0.0, 60.0, 600001)
    count = np.concatenate([[0.0], np.cumsum(ticks_per_s(grid[1:]) * np.diff(grid))])
    times = 0.5 + np.interp(np.arange(int(count[-1])), count, grid)
    f = ClockFollower(window=48)
    f.feed(mido.Message("start"), 0.4)
    worst_bpm, worst_beat = follow(f, times, frames, lambda t: 99.0 + 2.0 * (t - 0.5) / 60.0,
                                   times[::24])
    assert worst_bpm <= 0.3, worst_bpm
    assert worst_beat <= tolerance_s(frames), (worst_beat, frames)


@pytest.mark.parametrize("frames", PERIODS)
def test_a_clock_that_stops_and_restarts_at_another_phase(frames):
    per = 0.6 / 24
    f = ClockFollower(window=48)
    f.feed(mido.Message("start"), 1.0)
    first = 1.0 + per * np.arange(24 * 8)
    follow(f, first, frames, lambda t: 100.0, first[::24])
    stop = float(first[-1] + per)
    f.feed(mido.Message("stop"), stop)
    assert f.next_beat(stop) is None  # stopped, no ticks: no grid and no tempo
    assert f.beat_s(stop + 1.0) is None
    restart = stop + 2.345  # Start, the first tick a beat on, off the old grid
    f.feed(mido.Message("start"), restart)
    second = restart + 0.001 + per * np.arange(24 * 12)
    worst_bpm, worst_beat = follow(f, second, frames, lambda t: 100.0, second[::24])
    assert worst_bpm <= 0.3, worst_bpm
    assert worst_beat <= tolerance_s(frames), (worst_beat, frames)


def follow_a_step(frames: int, ticks: int, at: int, step_s: float, judged: int) -> tuple[
        float, float]:
    """A 100 BPM clock of ``ticks`` ticks whose ticks from ``at`` on come ``step_s`` later,
    stamped per cycle of ``frames``. Returns the worst beat error (s, against the nearest
    beat of the later clock) and the worst tempo error (BPM), asked at every tick from
    ``at + judged`` on."""
    per = 0.6 / 24
    i = np.arange(ticks)
    sent = 0.2 + per * i + np.where(i >= at, step_s, 0)
    f = ClockFollower(window=48)
    f.feed(mido.Message("start"), 0.1)
    worst = worst_bpm = 0.0
    for k, t in enumerate(cycle_stamps(sent, frames)):
        f.feed(TICK, float(t))
        if k >= at + judged:
            worst_bpm = max(worst_bpm, abs(f.bpm(float(t)) - 100.0))
            b = f.next_beat(float(t) + 0.05)
            if b < sent[-1]:
                worst = max(worst, float(np.min(np.abs(sent[::24] - b))))
    return worst, worst_bpm


@pytest.mark.parametrize(("frames", "shift"), [(256, 0.79), (256, 2.5), (256, 0.35),
                                              (64, 2.5), (1024, 2.5)])
def test_a_clock_that_comes_later_after_a_stall_keeps_its_count(frames, shift):
    """From tick 150 on, every tick comes ``shift`` periods later (a JACK graph that stalled:
    0.79 periods on the judge's frames, 2.5 on the companion's clock after a 70 ms stall;
    no tick lost). From JUDGE_TICKS ticks after the gap on, every next beat is on the later
    clock's beats, within max(3 ms, one period), and the tempo within 0.3 BPM."""
    worst, worst_bpm = follow_a_step(frames, 24 * 12, 150, shift * 0.6 / 24, JUDGE_TICKS + 1)
    assert worst <= tolerance_s(frames), worst
    assert worst_bpm <= 0.3, worst_bpm


@pytest.mark.parametrize(("frames", "step_ms"), [(64, 3), (256, 3), (256, 5), (512, 7),
                                                 (1024, 12)])
def test_a_clock_that_comes_a_little_later_keeps_its_tempo(frames, step_ms):
    """A short stall: from tick 200 on the ticks come ``step_ms`` later, inside the band the
    stamps scatter in (no single tick gives it away). Left in the line, such a step tilted
    its tempo by 0.4-1.5 BPM; found from the ticks' mean, from STEP_TICKS ticks after it on
    the tempo stays within 0.3 BPM and every next beat within max(3 ms, one period)."""
    worst, worst_bpm = follow_a_step(frames, 24 * 16, 200, step_ms / 1000, STEP_TICKS)
    assert worst_bpm <= 0.3, worst_bpm
    assert worst <= tolerance_s(frames), worst
