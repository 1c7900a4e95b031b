"""Accompanying live (companion.engine.along): the engine on a virtual clock, polled deadline
to deadline as the live loop polls it, with a random-weight harmony package (conftest's
``harmony_pkg``). Each chord is decided before its beat, sounds on the beat grid on its own
channels under the melody, and every note of it ends: after a bar of silence, where the
companion answers, on mode off, on panic."""

from __future__ import annotations

import mido
import pytest
from support import EngineRig, make_config

from companion.config import ConfigError

BPM = 120.0
BEAT = 60.0 / BPM
#: Four bars in G, quarters and a few eighths, ending on a held G.
MELODY = [(p, b, d) for p, b, d in [
    (67, 0, 1), (71, 1, 1), (74, 2, 1), (71, 3, 1), (72, 4, 1), (69, 5, 0.5), (71, 5.5, 0.5),
    (72, 6, 1), (74, 7, 1), (76, 8, 1), (74, 9, 1), (72, 10, 1), (71, 11, 1), (69, 12, 1),
    (66, 13, 1), (67, 14, 2)]]
CHORDS, BASS = 1, 2  # accompany.channel 2, bass_channel 3, 0-based


def rig_for(model, model_pkg, harmony_pkg, **accompany) -> EngineRig:
    cfg = make_config(model_pkg, listen={"tempo_bpm": BPM, "phrase_end_beats": 1.5},
                      accompany={"mode": "chords_bass", "lookahead_ms": 50,
                                 "model": str(harmony_pkg), **accompany})
    return EngineRig(model, cfg, seed=2, harmony=harmony_pkg)


def ons(rig: EngineRig, channels=(CHORDS, BASS)) -> list[tuple[float, mido.Message]]:
    return [(t, m) for t, m in rig.sent
            if m.type == "note_on" and m.velocity > 0 and m.channel in channels]


def assert_all_off(rig: EngineRig) -> None:
    """Every accompaniment note-on has its note-off, per channel."""
    for ch in (CHORDS, BASS):
        sounding: set[int] = set()
        for _, m in rig.sent:
            if m.channel != ch or m.type not in ("note_on", "note_off"):
                continue
            if m.type == "note_on" and m.velocity > 0:
                sounding.add(m.note)
            else:
                sounding.discard(m.note)
        assert not sounding, f"channel {ch + 1}: left sounding {sorted(sounding)}"


def test_accompanying_only_chords_on_the_beat_before_it_under_the_melody(
        model, model_pkg, harmony_pkg):
    rig = rig_for(model, model_pkg, harmony_pkg, during="only")
    end = rig.play(MELODY, live=True)
    rig.until(end + 4 * 4 * BEAT)
    along = rig.engine.along
    notes = ons(rig)
    assert along.decisions >= 14 and along.late == 0  # every slot decided before its beat
    assert notes, "no accompaniment played"
    for t, m in notes:  # on the performer's beat grid (its first onset a downbeat)
        assert abs(t / BEAT - round(t / BEAT)) < 1e-6, (t, m)
        if m.channel == CHORDS:  # under the lowest melody note of the last 8 beats
            recent = [p for p, b, _ in MELODY if t / BEAT - 8 <= b <= t / BEAT + 1e-9]
            assert m.note < min(recent), (t, m.note, recent)
    assert {m.channel for _, m in notes} == {CHORDS, BASS}
    chords = rig.events_of("chord")
    assert chords and all(c["decided"] < round(c["beat"] / BEAT) for c in chords)
    assert not [m for _, m in rig.sent if m.channel == 0], "accompany only: it answered"
    assert not rig.events_of("phrase_end")
    # a bar of silence after the last release: over, every note off
    last = max(t for t, _ in notes)
    assert last < end + 4 * BEAT + 1e-6 and not along.running
    assert_all_off(rig)
    assert rig.engine.next_deadline() is None  # nothing left to wake up for


def test_call_mode_accompanies_the_call_then_answers_without_chords(
        model, model_pkg, harmony_pkg):
    rig = rig_for(model, model_pkg, harmony_pkg, during="call", style="bar")
    end = rig.play(MELODY[:8], live=True)
    rig.until(end + 8 * BEAT)
    rig.player.flush()
    (pe,) = rig.events_of("phrase_end")
    answer = [t for t, m in rig.sent if m.channel == 0 and m.type == "note_on"]
    notes = ons(rig)
    assert answer and notes
    assert max(t for t, _ in notes) < pe["t"] <= min(answer)  # chords stop, then it answers
    assert_all_off(rig)


@pytest.mark.parametrize("how", ["mode_off", "panic", "mute"])
def test_chords_stop_at_once_and_nothing_stays_on(model, model_pkg, harmony_pkg, how):
    rig = rig_for(model, model_pkg, harmony_pkg, during="only", style="bar")
    rig.play(MELODY[:6], live=True)  # to beat 5
    rig.until(5.75 * BEAT)
    assert ons(rig)
    stop_at = rig.clock.now()
    if how == "mode_off":
        assert rig.engine.set("accompany.mode", "off") == "off"
    elif how == "panic":
        rig.engine.stop_accompaniment()
    else:
        rig.engine.set_muted(True)
    assert_all_off(rig)
    if how != "panic":  # the performer plays on (after a panic, that starts a new run)
        rig.play(MELODY[6:9], live=True)
    rig.until(stop_at + 4 * BEAT)
    assert all(t <= stop_at for t, _ in ons(rig)), "chords went on after they were stopped"
    assert_all_off(rig)


def test_a_new_run_starts_with_the_next_note_after_panic(model, model_pkg, harmony_pkg):
    rig = rig_for(model, model_pkg, harmony_pkg, during="only")
    rig.play(MELODY[:4], live=True)
    rig.until(3.5 * BEAT)
    rig.engine.stop_accompaniment()
    before = len(ons(rig))
    rig.play(MELODY[4:10], live=True)  # the melody goes on
    rig.until(10 * BEAT)
    assert len(ons(rig)) > before and rig.engine.chord_name() != "-"


def test_bad_accompany_values_change_nothing(model, model_pkg, harmony_pkg):
    rig = rig_for(model, model_pkg, harmony_pkg, mode="off")
    for name, value in (("accompany.mode", "loud"), ("accompany.style", 3),
                        ("accompany.temperature", 9.0), ("accompany.during", None)):
        before = rig.engine.setting(name)
        with pytest.raises(ConfigError, match=name.split(".")[1]):
            rig.engine.set(name, value)
        assert rig.engine.setting(name) == before
    assert rig.engine.along is None  # off: the harmony package not even loaded
    bare = EngineRig(model, make_config(model_pkg), seed=1)  # no harmony package to load
    with pytest.raises(ConfigError, match="accompany.mode"):
        bare.engine.set("accompany.mode", "chords")
    assert bare.engine.setting("accompany.mode") == "off"


def test_the_next_run_goes_on_with_the_tune_heard_until_the_mode_is_off(
        model, model_pkg, harmony_pkg):
    rig = rig_for(model, model_pkg, harmony_pkg, during="only")
    rig.play(MELODY[:8], live=True)  # two bars
    rig.until(13 * BEAT)  # a bar of silence after the last release: the run is over
    along, acc = rig.engine.along, rig.engine.along.acc
    assert not along.running and acc.heard_any()  # its key and form kept
    first_run = [d.beat for d in acc.decisions]
    t2 = 13.3 * BEAT  # the second phrase, off the first's grid
    rig.play(MELODY[8:], t0=t2 - MELODY[8][1] * BEAT, live=True)
    rig.until(t2 + 16 * BEAT)  # its last release, then a bar of silence
    heard = [b for b, _ in acc.heard]
    assert len(heard) == len(MELODY)  # both phrases, one tune
    start = heard[8]  # the second phrase's first note: the next bar line of the count
    assert start % 4 == 0 and start > max(first_run), (start, first_run)
    second = [t for t, _ in ons(rig) if t >= t2]
    assert second and all(abs((t - t2) / BEAT - round((t - t2) / BEAT)) < 1e-6
                          for t in second)  # on the second phrase's own grid
    assert_all_off(rig)
    assert rig.engine.set("accompany.mode", "off") == "off"
    assert not acc.heard_any()  # the mode off forgets the tune
