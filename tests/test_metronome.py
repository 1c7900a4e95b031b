"""Count-in and metronome: which beats click, and clicks on the real clock in order."""

from __future__ import annotations

import time

import pytest

from companion.realtime.clock import RealClock
from companion.realtime.metronome import ClickThread, Metronome


def test_count_in_then_silence():
    m = Metronome(count_in=4, always=False)
    beats = []
    last = None
    while m.wants():
        last = m.next_beat(10.0, last, 0.5, None)
        beats.append(last)
        m.clicked += 1
    assert beats == [10.0, 10.5, 11.0, 11.5]
    assert not Metronome(0, False).wants() and Metronome(0, True).wants()


def test_clicks_follow_the_clock_beat():
    m = Metronome(count_in=0, always=True)
    assert m.next_beat(3.0, None, 0.6, 3.2) == 3.2
    assert m.next_beat(3.25, 3.2, 0.6, 3.2) == pytest.approx(3.8)  # clicked already


def test_click_thread_sends_on_and_off_in_order():
    sent = []
    clock = RealClock()
    t = ClickThread(Metronome(3, False), lambda m: sent.append((clock.now(), m)), clock,
                    lambda: 0.1, lambda now: None, lambda: False, channel=9, note=37,
                    velocity=90)
    t.start()
    time.sleep(0.6)
    t.stop()
    kinds = [m.type for _, m in sent]
    assert kinds == ["note_on", "note_off"] * 3
    assert all(m.channel == 9 and m.note == 37 for _, m in sent)
    ons = [s for s, m in sent if m.type == "note_on"]
    assert all(b - a == pytest.approx(0.1, abs=0.05) for a, b in zip(ons, ons[1:],
                                                                      strict=False))


def test_halted_sends_no_click():
    sent = []
    t = ClickThread(Metronome(3, True), sent.append, RealClock(), lambda: 0.05,
                    lambda now: None, lambda: True)
    t.start()
    time.sleep(0.1)
    t.stop()
    assert sent == []
