"""The scheduler: event order, cancel, halt, and timing without drift on the real clock."""

from __future__ import annotations

import statistics
import time

from companion.engine.protocols import TimedNote
from companion.midi.loopback import LoopbackOut
from companion.realtime.clock import RealClock, VirtualClock
from companion.realtime.scheduler import Scheduler, Timeline, VirtualScheduler


def test_timeline_orders_offs_before_ons_and_handles_overlaps():
    tl = Timeline()
    tl.add(1, TimedNote(60, 0.0, 1.0, 80))
    tl.add(1, TimedNote(60, 1.0, 1.0, 81))  # re-struck when the first ends
    tl.add(1, TimedNote(64, 1.5, 2.0, 82))
    tl.add(1, TimedNote(64, 2.0, 0.5, 83))  # overlaps the sounding 64
    got = tl.pop_due(10.0)
    kinds = [(k, p) for k, _, _, p, _, _ in got]
    assert kinds == [(1, 60), (0, 60), (1, 60), (1, 64), (0, 60), (0, 64), (1, 64), (0, 64)]
    assert tl.sounding == {} and tl.started[1] == 4


def test_virtual_scheduler_plays_each_event_at_its_time():
    clock = VirtualClock()
    sent = []
    vs = VirtualScheduler(lambda m: sent.append((clock.now(), m)), clock, channel=3)
    vs.begin(1)
    vs.add(1, TimedNote(60, 1.0, 0.5, 80))
    vs.add(1, TimedNote(62, 2.0, 0.5, 80))
    vs.advance(1.2)
    assert [(t, m.type, m.note, m.channel) for t, m in sent] == [(1.0, "note_on", 60, 3)]
    assert vs.started(1) == 1 and vs.busy(1)
    vs.flush()
    assert [(t, m.type) for t, m in sent] == [
        (1.0, "note_on"), (1.5, "note_off"), (2.0, "note_on"), (2.5, "note_off")]
    assert not vs.busy(1)


def test_shift_moves_only_what_is_still_to_play():
    clock = VirtualClock()
    sent = []
    vs = VirtualScheduler(lambda m: sent.append((clock.now(), m.type, m.note)), clock)
    vs.add(1, TimedNote(60, 1.0, 0.5, 80))
    vs.add(1, TimedNote(62, 2.0, 0.5, 80))
    vs.advance(1.2)
    vs.shift(1.2, 0.07)  # the note sounding ends later, the next starts later
    vs.flush()
    assert sent == [(1.0, "note_on", 60), (1.57, "note_off", 60), (2.07, "note_on", 62),
                    (2.57, "note_off", 62)]


def test_cancel_turns_off_what_sounds_and_drops_the_rest():
    clock = VirtualClock()
    sent = []
    vs = VirtualScheduler(lambda m: sent.append(m), clock)
    for i in range(4):
        vs.add(1, TimedNote(60 + i, i * 1.0, 0.9, 80))
    vs.advance(1.5)
    assert vs.cancel(1) == 2
    assert sent[-1].type == "note_off" and sent[-1].note == 61
    n = len(sent)
    vs.flush()
    assert len(sent) == n


def test_a_new_answer_ends_what_is_left_of_the_previous_one():
    clock = VirtualClock()
    sent = []
    vs = VirtualScheduler(lambda m: sent.append(m), clock)
    vs.add(1, TimedNote(60, 0.0, 5.0, 80))
    vs.add(1, TimedNote(62, 6.0, 1.0, 80))
    vs.advance(1.0)
    vs.begin(2)
    assert [(m.type, m.note) for m in sent] == [("note_on", 60), ("note_off", 60)]
    vs.flush()
    assert len(sent) == 2


def test_real_clock_timing_does_not_drift():
    """200 notes, 10 ms apart: the last is as punctual as the first (absolute deadlines).
    The bounds are loose on purpose (a loaded CI machine); `companion bench` measures."""
    clock = RealClock()
    rec = LoopbackOut(now=clock.now)
    sched = Scheduler(rec.send, clock)
    sched.start()
    try:
        t0 = clock.now() + 0.05
        notes = [TimedNote(60 + i % 12, t0 + i * 0.01, 0.008, 80) for i in range(200)]
        sched.begin(1)
        for n in notes:
            sched.add(1, n)
        deadline = time.monotonic() + 10
        while sched.busy(1) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sched.close()
    ons = [t for t, m in rec.messages() if m.type == "note_on"]
    assert len(ons) == 200
    errors = [t - n.start for t, n in zip(ons, notes, strict=True)]
    assert min(errors) >= 0  # never early
    early, late = statistics.median(errors[:50]), statistics.median(errors[-50:])
    assert late < early + 0.02, (early, late)  # no accumulated drift
    assert statistics.median(errors) < 0.005
    offs = [m.note for _, m in rec.messages() if m.type == "note_off"]
    assert len(offs) == 200


def test_cancel_and_halt_on_the_real_clock():
    clock = RealClock()
    rec = LoopbackOut(now=clock.now)
    sched = Scheduler(rec.send, clock)
    sched.start()
    try:
        t0 = clock.now() + 0.02
        sched.begin(1)
        for i in range(50):
            sched.add(1, TimedNote(60, t0 + i * 0.02, 0.015, 80))
        deadline = time.monotonic() + 10
        while sched.started(1) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        sched.halted = True
        t_halt = clock.now()
        time.sleep(0.1)
        played = sched.cancel(1)
        assert 2 <= played <= 50
    finally:
        sched.close()
    assert not [t for t, m in rec.messages() if m.type == "note_on" and t > t_halt]
    ons = sum(m.type == "note_on" for _, m in rec.messages())
    offs = sum(m.type == "note_off" for _, m in rec.messages())
    assert ons == offs


def test_observer_sees_each_note_handed_over_until_removed():
    clock = VirtualClock()
    sent = []
    vs = VirtualScheduler(sent.append, clock)
    seen = []
    vs.observe(lambda answer, note, t: seen.append((answer, note.pitch, t)))
    clock.set(1.5)
    vs.add(3, TimedNote(60, 2.0, 1.0, 80))
    vs.add(3, TimedNote(62, 3.0, 1.0, 80))
    vs.observe(None)
    vs.add(3, TimedNote(64, 4.0, 1.0, 80))
    assert seen == [(3, 60, 1.5), (3, 62, 1.5)]
    vs.flush()  # it only watches: every note is played all the same
    assert [m.note for m in sent if m.type == "note_on"] == [60, 62, 64]


def test_notes_on_their_own_channels_and_the_accompaniment_outlives_an_answer():
    """A note names its channel (else the player's); the same pitch on two channels is two
    notes; a new answer never stops the accompaniment, a cancel of it does."""
    from companion.engine.protocols import ACCOMPANIMENT

    clock = VirtualClock()
    sent = []
    vs = VirtualScheduler(lambda m: sent.append((clock.now(), m)), clock, channel=0)
    vs.add(ACCOMPANIMENT, TimedNote(60, 0.0, 4.0, 70, channel=1))
    vs.begin(1)
    vs.add(1, TimedNote(60, 1.0, 1.0, 80))
    vs.advance(1.5)
    assert [(m.type, m.note, m.channel) for _, m in sent] == [
        ("note_on", 60, 1), ("note_on", 60, 0)]
    vs.begin(2)  # the answer stops, the accompaniment goes on
    assert [(m.type, m.channel) for _, m in sent[2:]] == [("note_off", 0)]
    assert vs.busy(ACCOMPANIMENT)
    vs.cancel(ACCOMPANIMENT)
    assert [(m.type, m.note, m.channel) for _, m in sent[3:]] == [("note_off", 60, 1)]
    assert not vs.busy(ACCOMPANIMENT)
