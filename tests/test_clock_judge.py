"""The JACK clock tests' judge counts the ticks the clock sent: one it lost itself is put
back only when the companion heard it (``put_back_lost_ticks``)."""

from __future__ import annotations

from test_clock_jack import beat_frames, late_clients, put_back_lost_ticks

TICK = 1200  # frames: 100 BPM at 48 kHz
PERIOD = 256


def _dump(lost: int, early: int = PERIOD) -> list[tuple[int, list[int]]]:
    """Start and 60 ticks, tick ``lost`` missing and those after it ``early`` frames early
    (as jack_midi_dump shows a missed cycle), an answer's note on beat 2 (tick 48)."""
    events: list[tuple[int, list[int]]] = [(0, [0xFA])]
    for n in range(60):
        if n != lost:
            events.append((1000 + n * TICK - (early if n > lost else 0), [0xF8]))
    events.append((1000 + 48 * TICK - early, [0x90, 60, 90]))
    return sorted(events, key=lambda e: e[0])


def test_a_tick_the_companion_heard_is_put_back():
    events, put_back = put_back_lost_ticks(_dump(20), PERIOD, "MIDI clock ticks heard: 60")
    assert put_back == 1
    assert sum(1 for _, d in events if d == [0xF8]) == 60
    note = next(f for f, d in events if d[0] == 0x90)
    assert note in beat_frames(events)  # counted from Start, the note lies on beat 2


def test_a_tick_nobody_heard_was_not_sent():
    events, put_back = put_back_lost_ticks(_dump(20), PERIOD, "MIDI clock ticks heard: 59")
    assert put_back == 0
    assert sum(1 for _, d in events if d == [0xF8]) == 59


def test_no_tick_is_put_back_across_a_stop_or_where_a_period_spans_half_a_tick():
    events = _dump(20)
    gap = next(i for i, (f, d) in enumerate(events) if f > 1000 + 19 * TICK)
    stopped = [*events[:gap], (events[gap][0] - 1, [0xFC]), *events[gap:]]
    assert put_back_lost_ticks(stopped, PERIOD, "MIDI clock ticks heard: 60")[1] == 0
    assert put_back_lost_ticks(_dump(20, 0), 1024, "MIDI clock ticks heard: 60")[1] == 0


def test_the_note_names_the_clients_jackd_found_not_finished():
    log = ("JackEngine::XRun: client = judge was not finished, state = Triggered\n"
           "JackEngine::XRun: client = jack_midi_clock was not finished, state = Running\n"
           "JackEngine::XRun: client = judge was not finished, state = Triggered\n")
    assert late_clients(log) == "judge Triggered 2, jack_midi_clock Running 1"
    assert late_clients("JackEngine::XRun\n") == "none"
