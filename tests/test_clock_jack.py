"""MIDI clock sync end to end, at the periods performers run JACK at: `companion live` on a
JACK server follows a real 100 BPM clock client (Debian's ``jack_midi_clock``), and its
answer starts on one of the clock's beats.

The judge is independent of the companion and sample-accurate: ``jack_midi_dump -a`` hears
the clock and the companion's output on one port and prints each event's frame. A beat is
a clock tick whose count since Start is a multiple of 24; the answer's first note-on must
lie within max(3 ms, one period) of one (MIDI leaves a client at the start of a cycle, so a
period is the output's own resolution). The tempo the companion logs must be 100 +- 0.3 BPM.

The JACK server runs real-time (SCHED_FIFO) where the machine allows it: without, a loaded
machine makes xruns, each dropping a cycle's MIDI, ticks among it (at 64 frames, 610 of
them in one run, and 87 BPM followed). It also runs synchronous (``jack_sync``): in JACK2's
default asynchronous graph a client late for its cycle (a stall of the machine) misses that
cycle's MIDI, and a tick lost at the companion's input leaves its count, so its grid, a tick
late (25 ms at 100 BPM); synchronous, the graph waits for it. Each test says which
scheduling and mode it got and how many xruns the server counted, and checks that the
companion heard every tick the judge did.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from support import delete_rtmidi, write_config
from test_live_jack import ROOT, Companion

from bench.jackserver import LOG_KEY, MODE_KEY, RATE, SCHED_KEY, client_env

pytestmark = [pytest.mark.jack, pytest.mark.jack_sync]

CLOCK_BPM = 100.0
END_NOTE = 108
TOOLS = ("jack_midi_clock", "jack_midi_dump", "jack_connect", "jack_transport", "jack_lsp")


def _tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not installed (Debian: jack-midi-clock, jackd2)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def _connect(env: dict, a: str, b: str) -> None:
    deadline = time.monotonic() + 10
    while subprocess.run(["jack_connect", a, b], env=env, capture_output=True).returncode:
        assert time.monotonic() < deadline, f"cannot connect {a} -> {b}"
        time.sleep(0.1)


def _port(env: dict, suffix: str) -> str:
    """The companion's port ending in ``suffix`` (its in and out are two JACK clients)."""
    names = subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True).stdout
    found = [n for n in names.split() if n.startswith("companion") and n.endswith(suffix)]
    assert len(found) == 1, names
    return found[0]


def _transport(env: dict, command: str) -> None:
    subprocess.run(["jack_transport"], input=f"{command}\nquit\n", env=env, text=True,
                   capture_output=True, timeout=10, check=True)


def start_judge(env: dict, dump_path: Path) -> subprocess.Popen:
    """``jack_midi_dump -a judge``: its dump in ``dump_path``, what it and libjack say (a
    real-time priority refused, a full ring buffer) beside it in ``judge.err``."""
    with open(dump_path, "w") as out, open(dump_path.with_name("judge.err"), "w") as err:
        return subprocess.Popen(["jack_midi_dump", "-a", "judge"], env=env, stdout=out,
                                stderr=err)


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
    server_log = Path(env[LOG_KEY]).read_text()
    xruns = server_log.count("XRun")
    judge_late = server_log.count("client = judge was not finished")
    judged = sum(1 for _, d in events if d == [0xF8])
    return (f"jackd {env[SCHED_KEY]} {env[MODE_KEY]}, {xruns} xruns, {judge_late} in the "
            f"judge; ticks: "
            f"{judged} judged ({put_back} of them lost by the judge, put back), "
            f"{heard_ticks(log)} heard; not finished: {late_clients(server_log)}")


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


def _stall_after_the_decision(comp: Companion, stall_s: float) -> None:
    """Once the companion has logged its answer (placed on the clock's grid, not yet all
    played), every CPU is held for ``stall_s`` (bench.stall: the JACK graph stalls, as on a
    stage machine that something else took), so the clock comes later on the companion's
    clock."""
    deadline = time.monotonic() + 10
    while not any("-> answer of" in ln for ln in comp.lines):
        assert time.monotonic() < deadline, "no answer logged:\n" + "\n".join(comp.lines)
        time.sleep(0.002)
    stall = subprocess.run([sys.executable, "-m", "bench.stall", str(stall_s),
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
    import rtmidi

    cfg = write_config(
        tmp_path / "config.yaml", model_pkg,
        listen={"tempo_bpm": 130.0, "phrase_end_beats": 1.0},  # not the clock's tempo
        answer={"length": 4, "min_beats": 4, "max_beats": 4, "seed": 5},
        # the call ends with its end note: a note-off lost in a JACK xrun cannot hang it
        time={"quantize": "1/8", "swing": 0.5, "end_note": END_NOTE},
        session={"enabled": False},
    )
    comp = Companion(env, "--config", str(cfg))
    dump_path = tmp_path / "dump.txt"
    procs: list[subprocess.Popen] = []
    performer = None
    try:
        comp.wait_ready()
        procs.append(start_judge(env, dump_path))
        procs.append(subprocess.Popen(
            ["jack_midi_clock", "-b", str(CLOCK_BPM), "-B", "-P"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _connect(env, "jack_midi_clock:mclk_out", "judge:input")
        _connect(env, "jack_midi_clock:mclk_out", _port(env, ":in"))
        _connect(env, _port(env, ":out"), "judge:input")
        with client_env(env):
            performer = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name="performer")
        names = performer.get_ports()
        performer.open_port(names.index(_port(env, ":in")), name="out")
        _transport(env, "play")
        time.sleep(3.0)  # five beats of clock before the call
        # a call at its own pace, off the clock's grid
        call = [(67, 0.0, 0.25), (69, 0.33, 0.25), (71, 0.61, 0.25), (74, 0.95, 0.25),
                (72, 1.27, 0.5), (END_NOTE, 1.9, 0.05)]
        events = sorted([(s, [0x90, p, 90]) for p, s, _ in call]
                        + [(s + d, [0x80, p, 0]) for p, s, d in call], key=lambda e: e[0])
        t0 = time.perf_counter() + 0.137
        for s, m in events:
            time.sleep(max(0.0, t0 + s - time.perf_counter()))
            performer.send_message(m)
        if stall_s:
            _stall_after_the_decision(comp, stall_s)
        time.sleep(1.9 + 6 * 0.6)
        _transport(env, "stop")
        time.sleep(0.3)
    finally:
        if performer is not None:
            delete_rtmidi(performer)
        for p in procs:
            p.terminate()
            p.wait(timeout=5)
        status = comp.stop()
    assert status == 0, comp.lines
    log = "\n".join(comp.lines)
    events, put_back = put_back_lost_ticks(read_dump(dump_path), frames, log)
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


@pytest.mark.parametrize("jack_server", [64, 256], indirect=True)
def test_answers_on_the_clocks_beats(jack_server, tmp_path, model_pkg, request):
    _tools()
    run_clock_sync(jack_server, request.node.callspec.params["jack_server"], tmp_path,
                   model_pkg)


@pytest.mark.parametrize("jack_server", [256], indirect=True)
def test_an_answer_stays_on_the_beats_of_a_clock_that_stalled(jack_server, tmp_path,
                                                               model_pkg):
    _tools()
    run_clock_sync(jack_server, 256, tmp_path, model_pkg, stall_s=0.08)


@pytest.mark.slow
@pytest.mark.parametrize("jack_server", [512, 1024], indirect=True)
def test_answers_on_the_clocks_beats_at_stage_periods(jack_server, tmp_path, model_pkg,
                                                       request):
    _tools()
    run_clock_sync(jack_server, request.node.callspec.params["jack_server"], tmp_path,
                   model_pkg)
