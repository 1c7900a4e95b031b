"""The listener: notes to melody notes (chord top), held keys, the phrase-end deadline."""

from __future__ import annotations

import mido
import pytest

from companion.engine.listener import NEW_NOTE, NOTHING, TOP_CHANGED, Listener

BEAT = 0.5  # 120 BPM


def on(note, vel=80, ch=0):
    return mido.Message("note_on", note=note, velocity=vel, channel=ch)


def off(note, ch=0, zero_velocity_on=False):
    if zero_velocity_on:
        return mido.Message("note_on", note=note, velocity=0, channel=ch)
    return mido.Message("note_off", note=note, channel=ch)


def test_single_notes_are_melody_notes():
    lst = Listener(BEAT, 1.5, window_s=0.03)
    assert lst.feed(on(60), 0.0) == NEW_NOTE
    assert lst.feed(off(60), 0.4) == NOTHING
    assert lst.feed(on(62), 0.5) == NEW_NOTE
    assert [(n.pitch, n.time) for n in lst.notes] == [(60, 0.0), (62, 0.5)]


def test_chord_within_window_is_its_top_note():
    lst = Listener(BEAT, 1.5, window_s=0.03)
    assert lst.feed(on(60, 50), 1.000) == NEW_NOTE
    assert lst.feed(on(67, 90), 1.010) == TOP_CHANGED
    assert lst.feed(on(64, 70), 1.020) == NOTHING  # lower than the top: accompaniment
    assert lst.feed(on(72, 99), 1.029) == TOP_CHANGED
    assert lst.feed(on(74), 1.040) == NEW_NOTE  # after the window: the next melody note
    assert [(n.pitch, n.time, n.velocity) for n in lst.notes] == [
        (72, 1.0, 99), (74, 1.04, 80)]


def test_note_on_velocity_zero_is_note_off():
    lst = Listener(BEAT, 1.0)
    lst.feed(on(60), 0.0)
    lst.feed(off(60, zero_velocity_on=True), 0.3)
    assert not lst.held
    assert lst.deadline() == pytest.approx(0.3 + BEAT)


def test_phrase_ends_after_silence_with_no_key_held():
    lst = Listener(BEAT, 2.0, window_s=0.03)
    lst.feed(on(60), 0.0)
    lst.feed(on(64), 0.01)  # chord: two keys held
    # the phrase ends, if they are never released, at the later one's held limit
    held_end = 0.01 + (lst.held_limit_beats + 2) * BEAT
    assert lst.deadline() == pytest.approx(held_end)
    lst.feed(off(60), 0.5)
    assert lst.deadline() == pytest.approx(held_end)  # 64 still held
    lst.feed(off(64), 0.6)
    assert lst.deadline() == pytest.approx(0.6 + 2 * BEAT)
    assert not lst.phrase_ended(0.6 + 2 * BEAT - 1e-6)
    lst.feed(on(62), 1.2)  # played again before the deadline: same phrase
    assert lst.deadline() == pytest.approx(1.2 + (lst.held_limit_beats + 2) * BEAT)
    lst.feed(off(62), 1.4)
    assert lst.phrase_ended(1.4 + 2 * BEAT)
    assert [n.pitch for n in lst.take_phrase()] == [64, 62]
    assert lst.notes == [] and lst.deadline() is None


def test_channel_filter_and_other_messages():
    lst = Listener(BEAT, 1.0, channel=2)
    assert lst.feed(on(60, ch=0), 0.0) == NOTHING
    assert lst.feed(mido.Message("pitchwheel", pitch=100, channel=2), 0.1) == NOTHING
    assert lst.feed(mido.Message("sysex", data=[1, 2, 3]), 0.1) == NOTHING
    assert lst.feed(mido.Message("clock"), 0.1) == NOTHING
    assert lst.feed(off(61, ch=2), 0.1) == NOTHING  # a stray note-off
    assert lst.notes == [] and lst.deadline() is None
    assert lst.feed(on(60, ch=2), 0.2) == NEW_NOTE


def test_all_notes_off_releases_stuck_keys():
    lst = Listener(BEAT, 1.0)
    lst.feed(on(60), 0.0)
    assert lst.deadline() == pytest.approx((lst.held_limit_beats + 1) * BEAT)
    lst.feed(mido.Message("control_change", control=123, value=0), 0.7)
    assert lst.deadline() == pytest.approx(0.7 + BEAT)


def test_restruck_key_is_not_stuck():
    lst = Listener(BEAT, 1.0)
    lst.feed(on(60), 0.0)
    lst.feed(on(60), 0.5)  # a second note-on without an off in between
    lst.feed(off(60), 0.9)
    assert lst.deadline() == pytest.approx(0.9 + BEAT)
