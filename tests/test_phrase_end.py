"""When a call ends: the adaptive wait, the sustain pedal, and the explicit ends (pedal
release, a CC, a note), in the listener and through the engine; and ``tempo: auto``."""

from __future__ import annotations

import mido
import pytest
from support import EngineRig, make_config

from companion.engine.listener import NEW_NOTE, NOTHING, Listener
from companion.engine.tempo import Pace

BEAT = 0.5


def on(n, t=None):
    return mido.Message("note_on", note=n, velocity=80)


def off(n):
    return mido.Message("note_off", note=n)


def cc(c, v):
    return mido.Message("control_change", control=c, value=v)


def test_adaptive_wait_follows_the_pace():
    lst = Listener(BEAT, 1.5)
    lst.pace = Pace(2.5, 0.35, 4.0)
    t = 0.0
    for i in range(6):  # a reel: 0.15 s apart
        lst.feed(on(60 + i), t)
        lst.feed(off(60 + i), t + 0.1)
        t += 0.15
    assert lst.deadline() == pytest.approx(t - 0.05 + 0.375)
    lst.take_phrase()
    for i in range(8):  # a ballad: 1.2 s apart; the median of the recent 16 follows it
        lst.feed(on(60 + i), 10 + 1.2 * i)
        lst.feed(off(60 + i), 10 + 1.2 * i + 1.0)
    assert lst.deadline() == pytest.approx(10 + 8.4 + 1.0 + 3.0)


def test_sustain_pedal_holds_the_call_open():
    lst = Listener(BEAT, 1.0)
    lst.sustain_holds = True
    lst.feed(on(60), 0.0)
    lst.feed(cc(64, 127), 0.1)
    lst.feed(off(60), 0.4)
    held_end = 0.1 + (lst.held_limit_beats + 1) * BEAT  # the pedal's limit, then the wait
    assert lst.deadline() == pytest.approx(held_end)  # the pedal holds it
    lst.feed(on(60), 0.6)  # re-struck while held: a key again
    lst.feed(off(60), 0.8)
    assert lst.deadline() == pytest.approx(held_end)
    lst.feed(cc(64, 0), 2.0)
    assert lst.deadline() == pytest.approx(2.0 + BEAT)


def test_without_sustain_holds_the_pedal_is_ignored():
    lst = Listener(BEAT, 1.0)
    lst.feed(on(60), 0.0)
    lst.feed(cc(64, 127), 0.1)
    lst.feed(off(60), 0.4)
    assert lst.deadline() == pytest.approx(0.4 + BEAT)


def test_explicit_ends():
    lst = Listener(BEAT, 4.0)
    lst.end_on_pedal_release = True
    lst.feed(cc(64, 127), 0.0)  # before any note: nothing to end
    lst.feed(cc(64, 0), 0.05)
    assert lst.deadline() is None
    lst.feed(cc(64, 127), 0.1)
    lst.feed(on(60), 0.2)
    lst.feed(cc(64, 0), 0.5)  # the key is still down: the call ends all the same
    assert lst.deadline() == 0.5 and lst.phrase_ended(0.5)
    lst.take_phrase()
    assert lst.deadline() is None

    lst2 = Listener(BEAT, 4.0)
    lst2.end_cc, lst2.end_note = 20, 21
    lst2.feed(on(60), 0.0)
    lst2.feed(off(60), 0.3)
    lst2.feed(cc(20, 10), 0.4)  # a value under 64 is not a press
    assert lst2.deadline() == pytest.approx(0.3 + 2.0)
    lst2.feed(cc(20, 127), 0.6)
    assert lst2.deadline() == 0.6
    lst2.take_phrase()
    assert lst2.feed(on(62), 1.0) == NEW_NOTE
    assert lst2.feed(on(21), 1.2) == NOTHING  # the end note is no melody note
    assert [n.pitch for n in lst2.notes] == [62] and lst2.deadline() == 1.2


def rig(model, model_pkg, **time) -> EngineRig:
    cfg = make_config(model_pkg, listen={"tempo_bpm": 120.0, "phrase_end_beats": 2.0},
                      answer={"length": 4, "max_beats": 4}, time=time)
    return EngineRig(model, cfg, 1)


def test_end_note_answers_at_once_through_the_engine(model, model_pkg):
    r = rig(model, model_pkg, end_note=108, phrase_end="adaptive")
    for i, p in enumerate((60, 62, 64)):
        r.at(i * 0.5, on(p))
    r.at(1.3, on(108))  # keys still held
    assert r.engine.next_deadline() == 1.3
    answer = r.poll(1.3)
    assert answer is not None and [n.pitch for n in answer.call] == [60, 62, 64]
    assert answer.start == pytest.approx(1.5)  # the next beat of the call's grid


def test_tempo_auto_takes_the_calls_beat(model, model_pkg):
    r = rig(model, model_pkg, tempo="auto", phrase_end="fixed")
    e = r.engine
    beat = 60 / 100
    for i, s in enumerate((0, 1, 1.5, 2, 3, 3.5, 4)):
        r.at(s * beat, on(60 + i))
        r.at((s + 0.4) * beat, off(60 + i))
    assert e.beat_s == pytest.approx(beat, rel=0.02)
    assert e.next_deadline() == pytest.approx(4.4 * beat + 2 * e.beat_s)  # in its beats
    answer = r.poll(e.next_deadline())
    assert (answer.start / beat) == pytest.approx(round(answer.start / beat), abs=0.1)
    fixed = rig(model, model_pkg, tempo="fixed")
    for i, s in enumerate((0, 1, 1.5, 2, 3, 3.5, 4)):
        fixed.at(s * beat, on(60 + i))
    assert fixed.engine.beat_s == 0.5
