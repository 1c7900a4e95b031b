"""A MIDI clock that moves, end to end on JACK (256 frames): Debian's ``jack_midi_clock``
without ``-B`` follows the JACK transport and the tempo of its timebase master, here
``jack_transport`` (one process, driven through its stdin), and `companion live` follows it.

The judge is ``jack_midi_dump -a``, as in test_clock_jack: it hears the clock and the
companion's output on one port, sample-accurately. Beats are the ticks whose MIDI song
position (Start: 0; Song Position Pointer, then Continue: from there) is a multiple of 24;
the clock's tempo is measured from the frames of its beats (ticks), never taken from what
jack_transport was asked for. Each test prints the scheduling jackd got and its xruns; the
server runs synchronous, as in test_clock_jack.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import (
    END_NOTE,
    Rig,
    assert_every_tick_heard,
    beat_frames,
    check_graph_runs,
    clock_rig,
    jack_tools,
    put_back_lost_ticks,
    read_dump,
    server_note,
    write_config,
)

from bench.jackserver import RATE

pytestmark = [pytest.mark.jack, pytest.mark.jack_sync, pytest.mark.slow]

FRAMES = 256
TOL_S = max(0.003, FRAMES / RATE)  # MIDI leaves a client at a cycle's start
BPM_TOL = 0.3
INTERNAL_BPM = 130.0  # listen.tempo_bpm: not a tempo the clock ever has
#: A call at its own pace, off the clock's grid, ending with its end note (a note-off lost
#: in an xrun cannot hang it): (pitch, start s, duration s).
CALL = [(67, 0.0, 0.25), (69, 0.33, 0.25), (71, 0.61, 0.25), (74, 0.95, 0.25),
        (72, 1.27, 0.5), (END_NOTE, 1.9, 0.05)]
#: Note-ons further apart than this belong to different answers (calls are 6.5 s apart; an
#: answer of 4 beats at 99 BPM spans at most 2.4 s).
ANSWER_GAP_S = 3.5
ANSWER_RE = re.compile(r"call of \d+ notes -> answer of \d+ notes")
CLOCK_RE = re.compile(r"on the MIDI clock at ([\d.]+) BPM")

Event = tuple[int, list[int]]
Step = tuple[float, str | list[int]]  # (s from the timeline's start, transport or MIDI)
Play = Callable[[list[Step]], None]


def call_at(t: float) -> list[Step]:
    """``CALL`` as MIDI messages from ``t`` s."""
    on = [(t + s, [0x90, p, 90]) for p, s, _ in CALL]
    off = [(t + s + d, [0x80, p, 0]) for p, s, d in CALL]
    return on + off


def song_beats(events: list[Event]) -> list[int]:
    """Frames of the beats by the MIDI song position: Start counts the next tick as 0, Song
    Position Pointer (sixteenths) then Continue from there; no beats between Stop and
    Continue (or Start)."""
    beats, pos, pending, playing = [], 0, 0, False
    for frame, data in events:
        if data == [0xFA]:
            pos, playing = 0, True
        elif data == [0xFB]:
            pos, playing = pending, True
        elif data == [0xFC]:
            pending, playing = pos, False
        elif len(data) == 3 and data[0] == 0xF2:
            pending = (data[1] | data[2] << 7) * 6
        elif data == [0xF8] and playing:
            if pos % 24 == 0:
                beats.append(frame)
            pos += 1
    return beats


def frames_of(events: list[Event], status: int) -> list[int]:
    return [f for f, d in events if d and d[0] == status]


def bpm_of(frames: list[int], per_beat: int) -> float:
    """The tempo of a run of evenly meant frames (``per_beat`` of them a beat): from the
    median interval, so that the clock coming later once (a stall: an xrun) is no tempo."""
    k = len(frames)
    assert k >= 3, f"{k} clock events to measure a tempo from"
    gaps = [b - a for a, b in zip(frames, frames[1:], strict=False)]
    return 60.0 * RATE / (statistics.median(gaps) * per_beat)


def answers(events: list[Event]) -> list[list[int]]:
    """The companion's note-on frames (the only notes the judge hears), one list per answer:
    split at gaps longer than ANSWER_GAP_S."""
    groups: list[list[int]] = []
    for f, d in events:
        if len(d) == 3 and d[0] & 0xF0 == 0x90 and d[2] > 0:
            if not groups or f - groups[-1][-1] > ANSWER_GAP_S * RATE:
                groups.append([])
            groups[-1].append(f)
    return groups


def off_beat_s(frame: int, beats: list[int]) -> float:
    return min(abs(frame - b) for b in beats) / RATE


def grid_error_s(ons: list[int], step_s: float) -> float:
    """How far the note-ons lie, at most, from a grid of ``step_s`` through the first."""
    return max(abs((f - ons[0]) / RATE - round((f - ons[0]) / RATE / step_s) * step_s)
               for f in ons)


@contextmanager
def clock_session(env: dict, tmp_path: Path, model_pkg: Path, clock_args: list[str],
                  time_cfg: dict) -> Iterator[tuple[Play, Rig]]:
    """The clock rig (`clock_rig`: the companion, the judge, jack_midi_clock ``clock_args``
    and one jack_transport): yields (play a timeline, the rig); a timeline's strings are
    jack_transport commands, its lists MIDI to the companion. Before the first call the
    graph is checked to run (`check_graph_runs`)."""
    cfg = write_config(
        tmp_path / "config.yaml", model_pkg,
        listen={"tempo_bpm": INTERNAL_BPM, "phrase_end_beats": 1.0},
        answer={"length": 4, "min_beats": 4, "max_beats": 4, "seed": 5},
        time={"quantize": "1/8", "swing": 0.5, "end_note": END_NOTE, **time_cfg},
        session={"enabled": False},
    )
    with clock_rig(env, FRAMES, tmp_path, cfg, clock_args, transport=True) as rig:
        transport = rig.transport
        assert transport is not None

        def play(timeline: list[Step]) -> None:
            t0 = time.perf_counter() + 0.137
            checked = False
            for t, what in sorted(timeline, key=lambda s: s[0]):
                time.sleep(max(0.0, t0 + t - time.perf_counter()))
                if isinstance(what, str):
                    transport.stdin.write(what + "\n")
                    transport.stdin.flush()
                else:
                    if not checked:  # before the first call: nothing measured yet
                        check_graph_runs(rig.env, rig.clients, tmp_path)
                        checked = True
                    rig.performer.send_message(what)

        yield play, rig


@pytest.mark.parametrize("jack_server", [FRAMES], indirect=True)
def test_follows_a_drifting_clock(jack_server, tmp_path, model_pkg):
    """The transport's tempo steps from 99 to 101 BPM over 36 s (every second); 5 calls,
    6.5 s apart, are answered. Checks: the judge hears the clock drift (its first and last 8
    beats at least 1.5 BPM apart); each answer's first note-on lies within max(3 ms, one
    period) of a clock beat (from Start), and the tempo logged with it is within 0.3 BPM of
    the clock's, measured from the beats in the 5 s before that note."""
    jack_tools()
    env = jack_server
    steps: list[Step] = [(1.0 * k, f"tempo {99.0 + 2.0 * k / 36:.4f}") for k in range(37)]
    timeline = [(0.0, "master"), *steps, (0.01, "play"), (36.5, "stop")]
    calls = [3.0 + 6.5 * j for j in range(5)]
    for c in calls:
        timeline += call_at(c)
    # no -b: without the timebase master jack_midi_clock would not tick at all
    with clock_session(env, tmp_path, model_pkg, [], {}) as (play, rig):
        play(timeline)
        time.sleep(0.5)
    env, comp, dump_path = rig.env, rig.comp, rig.dump_path
    log = "\n".join(comp.lines)
    events, put_back = put_back_lost_ticks(read_dump(dump_path), FRAMES, log)
    beats = beat_frames(events)
    groups = answers(events)
    lines = [ln for ln in comp.lines if ANSWER_RE.search(ln)]
    server = f"{FRAMES} frames, {server_note(env, events, put_back, log)}"
    assert len(groups) == len(lines) == len(calls), f"{server}: {len(groups)} answers heard, " \
        f"{len(lines)} logged, {len(calls)} calls\n{log}"
    measured = []
    for ons, line in zip(groups, lines, strict=True):
        m = CLOCK_RE.search(line)
        assert m and "stopped" not in line, f"not on the running clock: {line}\n{log}"
        around = [b for b in beats if ons[0] - 5 * RATE <= b <= ons[0]]
        measured.append((off_beat_s(ons[0], beats), float(m.group(1)), bpm_of(around, 1)))
    print(f"{server}: clock {bpm_of(beats[:8], 1):.2f} -> {bpm_of(beats[-8:], 1):.2f} BPM "
          f"over {(beats[-1] - beats[0]) / RATE:.1f} s; answers (first note off a beat ms, "
          f"companion BPM, clock BPM): "
          + ", ".join(f"({o * 1000:.2f}, {c:.1f}, {k:.2f})" for o, c, k in measured)
          + f"; tolerance {TOL_S * 1000:.2f} ms, {BPM_TOL} BPM")
    assert bpm_of(beats[-8:], 1) - bpm_of(beats[:8], 1) >= 1.5, "the clock did not drift"
    assert_every_tick_heard(events, log, server)
    for off, companion_bpm, clock_bpm in measured:
        assert off <= TOL_S, f"{off * 1000:.2f} ms off the clock's beat ({server})\n{log}"
        assert abs(companion_bpm - clock_bpm) <= BPM_TOL, \
            f"followed at {companion_bpm} BPM, the clock at {clock_bpm:.2f} ({server})\n{log}"


@pytest.mark.parametrize("jack_server", [FRAMES], indirect=True)
def test_clock_that_stops_and_restarts(jack_server, tmp_path, model_pkg):
    """Transport at 100 BPM: play (Start), call A; stop (Stop: no ticks), call B; locate
    to 10.3 beats and play again: jack_midi_clock sends Song Position and ticks, and Continue
    only 5 s later (``-d 5``); call D in between, call C after Continue. Checks: A and C start
    within max(3 ms, one period) of a beat (C's counted from Continue at the song position,
    which is not on a beat) with the clock's tempo logged (within 0.3 BPM of the ticks');
    B is answered with no tick heard, at the internal tempo (logged, and its onsets fit that
    tempo's eighths better than the clock's); D is answered before Continue, logged on the
    clock's tempo with no beat grid (midiclock: after Stop the ticks give the tempo only)."""
    jack_tools()
    env = jack_server
    locate = round(10.3 * 60 / 100 * RATE)
    timeline: list[Step] = [(0.0, "master"), (0.0, "tempo 100"), (0.01, "play"),
                            (9.0, "stop"), (14.3, f"locate {locate}"), (14.8, "play"),
                            (29.0, "stop")]
    for c in (3.0, 9.5, 15.3, 23.3):  # A, B, D, C
        timeline += call_at(c)
    with clock_session(env, tmp_path, model_pkg, ["-d", "5"], {"tempo": "fixed"}) as (
            play, rig):
        play(timeline)
        time.sleep(0.5)
    env, comp, dump_path = rig.env, rig.comp, rig.dump_path
    log = "\n".join(comp.lines)
    events, put_back = put_back_lost_ticks(read_dump(dump_path), FRAMES, log)
    server = f"{FRAMES} frames, {server_note(env, events, put_back, log)}"
    groups = answers(events)
    lines = [ln for ln in comp.lines if ANSWER_RE.search(ln)]
    assert len(groups) == len(lines) == 4, \
        f"{server}: {len(groups)} answers heard, {len(lines)} logged, 4 calls\n{log}"
    (a, b, d, c), (la, lb, ld, lc) = groups, lines
    ticks = frames_of(events, 0xF8)
    stops, conts = frames_of(events, 0xFC), frames_of(events, 0xFB)
    assert stops and conts, f"the judge heard no Stop or no Continue: {server}"
    stop = next(f for f in stops if f > a[-1])
    cont = conts[0]
    positions = [(f, d[1] | d[2] << 7) for f, d in events if len(d) == 3 and d[0] == 0xF2
                 and f < cont]
    song_pos = positions[-1][1]
    beats = song_beats(events)
    new_beats = [f for f in beats if f >= cont]
    restart = next(f for f in ticks if f > stop)
    d_ticks = [f for f in ticks if restart <= f <= d[0]]
    checks = {
        "A": (off_beat_s(a[0], [f for f in beats if f < stop]), CLOCK_RE.search(la)),
        "C": (off_beat_s(c[0], new_beats), CLOCK_RE.search(lc)),
    }
    bpm_a = bpm_of([f for f in beats if a[0] - 5 * RATE <= f <= a[0]], 1)
    bpm_c = bpm_of([f for f in beats if c[0] - 5 * RATE <= f <= c[0]], 1)
    bpm_d = bpm_of(d_ticks, 24)
    in_stop = [f for f in ticks if stop < f <= b[-1]]
    err_own = grid_error_s(b, 30.0 / INTERNAL_BPM)
    err_clock = grid_error_s(b, 30.0 / bpm_a)
    print(f"{server}: A {checks['A'][0] * 1000:.2f} ms off a beat, clock {bpm_a:.2f} BPM; "
          f"B {len(b)} notes, {len(in_stop)} ticks heard, off {INTERNAL_BPM:g} BPM eighths "
          f"{err_own * 1000:.2f} ms (the clock's: {err_clock * 1000:.2f} ms); D before "
          f"Continue by {(cont - d[0]) / RATE:.2f} s, ticks {bpm_d:.2f} BPM; song position "
          f"{song_pos} sixteenths, first beat {(new_beats[0] - cont) / RATE * 1000:.0f} ms "
          f"after Continue; C {checks['C'][0] * 1000:.2f} ms off a beat, clock "
          f"{bpm_c:.2f} BPM; tolerance {TOL_S * 1000:.2f} ms\n"
          + "\n".join(f"  {ln}" for ln in lines))
    assert song_pos % 4, f"song position {song_pos} lies on a beat: C could not tell"
    assert_every_tick_heard(events, log, server)
    for name, (off, m), line, clock in (("A", checks["A"], la, bpm_a),
                                        ("C", checks["C"], lc, bpm_c)):
        assert m and "stopped" not in line, f"{name} not on the running clock: {line}\n{log}"
        assert abs(float(m.group(1)) - clock) <= BPM_TOL, f"{name}: {line}, clock {clock:.2f}"
        assert off <= TOL_S, f"{name}: {off * 1000:.2f} ms off the clock's beat ({server})"
    assert not in_stop, f"ticks while stopped: {in_stop}"
    assert "on the MIDI clock" not in lb and f" at {INTERNAL_BPM:.1f} BPM" in lb, lb
    assert len(b) >= 2 and err_own < err_clock, \
        f"B's onsets: {err_own * 1000:.2f} ms off {INTERNAL_BPM:g} BPM's eighths, " \
        f"{err_clock * 1000:.2f} ms off the clock's"
    assert stop < b[0] < restart, f"B not answered while stopped ({server})"
    m = CLOCK_RE.search(ld)
    assert m and "(stopped: no beat grid)" in ld, ld
    assert abs(float(m.group(1)) - bpm_d) <= BPM_TOL, f"D: {ld}, ticks {bpm_d:.2f}"
    assert restart < d[0] < cont, f"D not answered between restart and Continue ({server})"
