"""The engine on a virtual clock: stepping as notes arrive, answer timing, range, barge-in."""

from __future__ import annotations

import mido
import numpy as np
import pytest
from support import ENGINE_CALL as CALL
from support import EngineRig, make_config, touch

from companion.encoding import meter
from companion.encoding.curves import curve

TEMPO = 120.0
BEAT = 60.0 / TEMPO


def cfg(model_pkg, **answer):
    return make_config(model_pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1.5,
                                          "chord_window_ms": 30},
                       answer={"length": "call", "max_beats": 8, **answer},
                       time={"tempo": "fixed", "phrase_end": "fixed"})


def test_one_step_per_melody_note(model, model_pkg):
    rig = EngineRig(model, cfg(model_pkg))
    # bos: at once, or (a positional model) at the first note, with that note's position
    assert rig.engine.steps == (0 if model.positional else 1)
    rig.play(CALL, velocity=touch)
    assert rig.engine.steps == 1 + len(CALL) - 1  # the first note has no curve yet
    # a chord is one melody note; a higher note in the window re-takes that one step
    before = rig.engine.steps
    rig.at(10.0, mido.Message("note_on", note=60, velocity=60))
    rig.at(10.01, mido.Message("note_on", note=64, velocity=60))
    rig.at(10.02, mido.Message("note_on", note=55, velocity=60))
    assert rig.engine.steps == before + 2
    assert rig.engine.prev[0] == 64


def test_answer_comes_after_the_phrase_end_on_the_beat(model, model_pkg):
    rig = EngineRig(model, cfg(model_pkg))
    release = rig.play(CALL, velocity=touch)
    deadline = rig.engine.next_deadline()
    assert deadline == pytest.approx(release + 1.5 * BEAT)
    assert rig.poll(deadline - 1e-3) is None
    assert rig.sent == []
    before = rig.engine.steps
    answer = rig.poll(deadline)
    rig.player.flush()
    assert answer is not None and answer.notes
    assert rig.engine.steps - before == len(answer.notes)  # no replay of the call
    first = answer.notes[0].start
    k = first / BEAT  # the grid is anchored at the call's first onset (t = 0)
    assert k == pytest.approx(round(k)) and deadline <= first < deadline + BEAT
    assert all(t >= first for t, _ in rig.sent)
    ons = [n.start for n in answer.notes]
    assert all(b > a for a, b in zip(ons, ons[1:], strict=False))
    assert ons[-1] - first < answer.beats * BEAT
    assert answer.beats == 6.0  # as long as the call: 0 to 5.7 beats, in whole beats
    for a, b in zip(answer.notes, answer.notes[1:], strict=False):
        assert a.end <= b.start + 1e-9  # articulation < 1: each note ends before the next
    assert all(n.duration <= 2.0 * BEAT + 1e-9 for n in answer.notes)


def test_pitches_stay_in_the_widened_range_and_midi(model, model_pkg):
    for seed in range(5):
        rig = EngineRig(model, cfg(model_pkg, temperature=2.0, top_p=1.0, range_widen=3), seed)
        rig.play([(120, 0, 0.5), (124, 1, 0.5), (122, 2, 0.5)], velocity=touch)
        _, answer = rig.finish()
        assert all(117 <= n.pitch <= 127 for n in answer.notes), [n.pitch for n in answer.notes]
        vels = [n.velocity for n in answer.notes]
        assert all(70 + 120 % 20 <= v <= 70 + 124 % 20 for v in vels)  # within the call's


def test_every_note_on_gets_its_note_off(model, model_pkg):
    rig = EngineRig(model, cfg(model_pkg, articulation=1.0))
    rig.play(CALL, velocity=touch)
    rig.finish()
    sounding = set()
    for _, m in rig.sent:
        if m.type == "note_on":
            assert m.note not in sounding
            sounding.add(m.note)
        elif m.type == "note_off":
            sounding.discard(m.note)
    assert sounding == set()


def test_same_seed_same_answer(model, model_pkg):
    def notes(seed):
        rig = EngineRig(model, cfg(model_pkg), seed)
        rig.play(CALL, velocity=touch)
        _, answer = rig.finish()
        return [(n.pitch, round(n.start, 9), round(n.duration, 9), n.velocity)
                for n in answer.notes]

    assert notes(3) == notes(3)
    assert any(notes(3) != notes(s) for s in (4, 5, 6))


def test_barge_in_stops_the_answer_and_keeps_the_state_of_what_was_played(model, model_pkg):
    from companion.engine.model import StepModel

    rig = EngineRig(model, cfg(model_pkg, length=8, min_beats=8))
    rig.play(CALL, velocity=touch)
    answer = rig.poll(rig.engine.next_deadline())  # not flushed: still to be played
    assert len(answer.notes) >= 3
    k = 2
    t = answer.notes[k - 1].start + 0.01  # note k-1 (0-based) sounds, k notes have started
    rig.player.advance(t)
    n_before = len(rig.sent)
    rig.at(t, mido.Message("note_on", note=64, velocity=90))
    assert any(kind == "barge_in" and d["played"] == k for kind, _, d in rig.events)
    after = rig.sent[n_before:]
    ons = [m for _, m in after if m.type == "note_on" and m.velocity > 0]
    assert ons == []  # the cut answer plays nothing more
    offs = [m.note for _, m in after if m.type == "note_off"]
    assert offs == [answer.notes[k - 1].pitch]  # its sounding note, off at once
    rig.player.flush()
    assert not any(m.type == "note_on" for tt, m in rig.sent if tt > t)

    # the state is the call, then the k answer notes that sounded, then the new note, each
    # at its onset's position on the call's grid (meter unknown: the phase in the beat)
    fresh = StepModel(model.dir)
    st = fresh.zero_state()
    fresh.step(fresh.vocab.bos, st, meter.position(0.0))
    melody = [(p, s * BEAT) for p, s, _ in CALL] + [
        (n.pitch, n.start) for n in answer.notes[:k]]
    anchor = 0.0
    for i in range(1, len(CALL)):
        (p0, t0), (p1, t1) = melody[i - 1], melody[i]
        fresh.step(fresh.vocab.token(*curve(p0, (t0 - anchor) / BEAT, p1, (t1 - anchor) / BEAT)),
                   st, meter.position((t1 - anchor) / BEAT))
    for tok, note in zip(answer.tokens[:k], answer.notes[:k], strict=True):
        fresh.step(tok, st, meter.position((note.start - anchor) / BEAT))
    p0, t0 = melody[-1]
    # the new note starts a call: its grid's origin
    fresh.step(fresh.vocab.token(*curve(p0, (t0 - t) / BEAT, 64, 0.0)), st, meter.position(0.0))
    np.testing.assert_allclose(rig.engine.state.h, st.h, atol=1e-5)
    np.testing.assert_allclose(rig.engine.state.c, st.c, atol=1e-5)


def test_barge_in_keep_plays_the_answer_out(model, model_pkg):
    rig = EngineRig(model, cfg(model_pkg, length=8, min_beats=8, barge_in="keep"))
    rig.play(CALL, velocity=touch)
    answer = rig.poll(rig.engine.next_deadline())
    t = answer.notes[1].start + 0.01
    rig.at(t, mido.Message("note_on", note=64, velocity=90))
    rig.player.flush()
    ons = [m.note for _, m in rig.sent if m.type == "note_on" and m.velocity > 0]
    assert ons == [n.pitch for n in answer.notes]


def test_long_silence_restarts_the_model(model, model_pkg):
    c = cfg(model_pkg)
    c.listen.reset_after_beats = 8
    rig = EngineRig(model, c)
    rig.play(CALL, velocity=touch)
    _, answer = rig.finish()
    later = answer.notes[-1].end + 9 * BEAT
    rig.at(later, mido.Message("note_on", note=60, velocity=80))
    assert any(kind == "reset" for kind, _, _ in rig.events)
    st = model.zero_state()
    model.step(model.vocab.bos, st)
    np.testing.assert_allclose(rig.engine.state.h, st.h, atol=1e-6)
    # within the limit: no restart, the new note continues the melody
    rig2 = EngineRig(model, c)
    rig2.play(CALL, velocity=touch)
    _, answer = rig2.finish()
    rig2.at(answer.notes[-1].end + 2 * BEAT, mido.Message("note_on", note=60, velocity=80))
    assert not any(kind == "reset" for kind, _, _ in rig2.events)


def test_one_note_call_still_gets_an_answer(model, model_pkg):
    rig = EngineRig(model, cfg(model_pkg, min_beats=2))
    rig.play([(60, 0, 0.5)], velocity=touch)
    _, answer = rig.finish()
    assert answer.notes and answer.beats == 2.0
    assert all(48 <= n.pitch <= 72 for n in answer.notes)
