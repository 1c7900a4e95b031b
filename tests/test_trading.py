"""Trading bars on the virtual clock (``answer.start: bar``, companion/engine/turn.py): the
answer starts on the bar line the call ends on, decided before it, lasts as many bars and
is over before the next call; a pause or a call that goes on is not answered into; free
playing waits for the silence; a MIDI clock's bars are the bars."""

from __future__ import annotations

import mido
import pytest
from support import EngineRig, make_config

from companion.engine.turn import DECIDE_AHEAD_S, Turn, on_grid, plan

BPM = 120.0
BEAT = 60.0 / BPM
BAR = 4 * BEAT

#: Two bars of quarters and eighths in D major, its last note held to the bar line.
TWO_BARS = [(62, 0, 1), (66, 1, 0.5), (69, 1.5, 0.5), (71, 2, 1), (69, 3, 1),
            (67, 4, 0.5), (66, 4.5, 0.5), (64, 5, 1), (62, 6, 2)]
#: One bar of quarter notes: C D E G.
QUARTERS = [(60, 0, 1), (62, 1, 1), (64, 2, 1), (67, 3, 1)]


def legato(notes, share: float = 0.95):
    return [(p, s, d * share) for p, s, d in notes]


def rig_for(model, model_pkg, **time) -> EngineRig:
    cfg = make_config(model_pkg, listen={"tempo_bpm": BPM},
                      answer={"start": "bar", "length": "call"},
                      time={"tempo": "fixed", **time})
    return EngineRig(model, cfg, seed=3)


def answer_after(rig: EngineRig, notes, t0: float, until: float):
    """Play ``notes`` from ``t0`` as live (every deadline polled on the way), then every
    deadline up to ``until``: the answers kept (those not stopped as the call went on)."""
    rig.play(notes, t0, live=True)
    rig.until(until)
    resumed = {d["answer"] for k, _, d in rig.events if k == "barge_in" and d.get("resumed")}
    return [d for k, _, d in rig.events if k == "phrase_end" and d["answer"] not in resumed]


def stray_notes(rig: EngineRig) -> int:
    """Notes of answers stopped as their call went on (a first call's bar taken for its end)."""
    return sum(d["played"] for k, _, d in rig.events if k == "barge_in" and d.get("resumed"))


def test_a_two_bar_call_is_answered_on_the_bar_line_for_two_bars(model, model_pkg):
    rig = rig_for(model, model_pkg)
    ends = answer_after(rig, legato(TWO_BARS), 0.0, 2 * BAR + 0.5)
    assert len(ends) == 1 and stray_notes(rig) <= 1  # the first bar may pass for a call
    a = rig.engine.answer
    assert a.start == pytest.approx(2 * BAR)  # on the bar line, no added wait
    assert a.decided == pytest.approx(2 * BAR - DECIDE_AHEAD_S)  # decided before it
    assert a.beats == 8.0  # as many bars as the call
    assert a.notes[0].start == pytest.approx(2 * BAR)
    assert max(n.end for n in a.notes) < 4 * BAR  # over before the next call's bar line


def test_the_status_says_what_it_waits_for(model, model_pkg):
    rig = rig_for(model, model_pkg)
    e = rig.engine
    assert e.waiting(0.0) == "listening: play a phrase"
    rig.at(0.0, mido.Message("note_on", note=62, velocity=80))
    assert e.waiting(0.1) == "holding: D4 is down"
    rig.play(legato(TWO_BARS[1:]), 0.0)
    rig.until(2 * BAR - 0.1)
    assert e.waiting(2 * BAR - 0.1) == "answering on the bar line unless you play on"
    rig.until(2 * BAR - 0.01)
    assert e.waiting(2 * BAR - 0.01) == "answering on the bar line"


def test_four_quarters_are_a_bar_answered_on_the_next_bar_line(model, model_pkg):
    rig = rig_for(model, model_pkg)
    answer_after(rig, legato(QUARTERS, 0.9), 0.0, BAR + 0.2)
    a = rig.engine.answer
    assert a is not None and a.start == pytest.approx(BAR) and a.beats == 4.0


def test_the_turns_length_holds_over_a_pause_inside_the_call(model, model_pkg):
    """After a four-bar call, a call that rests across its second bar line is not answered
    there: it goes on, and its answer comes on the bar line after its four bars."""
    rig = rig_for(model, model_pkg)
    four = legato(TWO_BARS[:-1] + [(62, 6, 1), (64, 7, 1)]
                  + [(p, s + 8, d) for p, s, d in TWO_BARS])
    answer_after(rig, four, 0.0, 4 * BAR + 0.1)
    first = rig.engine.answer
    assert first.start == pytest.approx(4 * BAR) and first.beats == 16.0
    t0 = 8 * BAR  # the next call, after the answer's four bars
    paused = [(p, s, d) for p, s, d in four if s < 6] + [
        (p, s, d) for p, s, d in four if s >= 9]  # a rest from beat 6 to beat 9
    decided = sum(1 for k, _, _ in rig.events if k == "phrase_end")
    ends = answer_after(rig, paused, t0, t0 + 4 * BAR + 0.1)
    assert len(ends) == 2  # not answered into the pause, nor on the bar line after it
    # known to be four bars: no answer even decided inside it
    assert sum(1 for k, _, _ in rig.events if k == "phrase_end") == decided + 1
    assert rig.engine.answer.start == pytest.approx(t0 + 4 * BAR)


def test_a_note_before_the_bar_line_withdraws_the_answer_unheard(model, model_pkg):
    """The answer decided just before the bar line is withdrawn by a note that comes before
    it; the call goes on, and the next answer is for the whole call."""
    rig = rig_for(model, model_pkg)
    rig.play(legato(TWO_BARS), 0.0)
    rig.until(2 * BAR - 0.01)  # decided, not yet sounding
    assert rig.engine.answer is not None and rig.sent == []
    rig.play(legato([(p, s, d) for p, s, d in TWO_BARS]), 2 * BAR - 0.01)
    rig.until(4 * BAR + 0.1)
    assert not [m for _, m in rig.sent if m.type == "note_on" and _ < 4 * BAR - 0.02]
    barge = [d for k, _, d in rig.events if k == "barge_in"]
    assert barge and barge[0]["resumed"] and barge[0]["played"] == 0
    a = rig.engine.answer
    assert a.start == pytest.approx(4 * BAR, abs=0.011) and a.beats == 16.0
    assert len(a.call) == 2 * len(TWO_BARS)


def test_a_note_just_after_the_bar_line_continues_the_call(model, model_pkg):
    """Playing on 20 ms after the bar line stops the answer after its first note; the call
    goes on, and the turn's length is the whole call's."""
    rig = rig_for(model, model_pkg)
    rig.play(legato(TWO_BARS), 0.0)
    rig.until(2 * BAR + 0.02)
    assert len([m for _, m in rig.sent if m.type == "note_on"]) == 1
    rig.play(legato(TWO_BARS), 2 * BAR + 0.02)
    rig.until(4 * BAR + 0.12)
    barge = [d for k, _, d in rig.events if k == "barge_in"]
    assert barge == [{"answer": 1, "played": 1, "resumed": True}]
    a = rig.engine.answer
    assert a.id == 2 and a.start == pytest.approx(4 * BAR, abs=0.03) and a.beats == 16.0
    assert rig.engine.turn.last_bars == 4


def test_an_odd_call_with_an_open_end_waits_a_bar_of_silence(model, model_pkg):
    """Three bars ending on a short note off the key's stable degrees is not a turn's end
    at its bar line; silent for the bar after, it is, and the answer starts there."""
    rig = rig_for(model, model_pkg)
    rig.engine.turn.last_bars = None
    three = legato(TWO_BARS[:-1] + [(62, 6, 1), (64, 7, 1), (66, 8, 1), (69, 9, 1),
                                    (71, 10, 1), (73, 11, 0.5)], 0.9)
    rig.play(three, 0.0)
    rig.until(3 * BAR + 0.1)
    assert rig.engine.answer is None
    rig.until(4 * BAR + 0.1)
    a = rig.engine.answer
    assert a is not None and a.start == pytest.approx(4 * BAR)


def test_free_playing_waits_for_the_silence(model, model_pkg):
    """Onsets off any beat grid: no bar in sight, the phrase-end silence decides."""
    rig = rig_for(model, model_pkg)
    rubato = [(60, 0, 1.2), (62, 1.42, 1), (64, 2.58, 0.7), (65, 3.42, 1), (67, 4.58, 1)]
    rig.play(rubato, 0.0)
    assert rig.engine.bar_plan() is None
    assert rig.engine.next_deadline() == rig.engine.listener.deadline()


def test_on_a_midi_clock_the_answer_starts_on_its_bar_line(model, model_pkg):
    """Clock at 100 BPM from Start at t0: a two-bar call played a beat after the clock's
    bar line (so its own first onset is not a bar line) is answered on the clock's bar
    line, four bars of four beats after Start."""
    rig = rig_for(model, model_pkg, meter=4)
    beat = 0.6
    t0 = 0.2
    rig.at(t0 - 0.001, mido.Message("start"))
    events = [(t0 + i * beat / 24, mido.Message("clock")) for i in range(24 * 20)]
    call_t0 = t0 + 4 * beat  # the clock's second bar
    for p, s, d in legato(TWO_BARS):
        events += [(call_t0 + s * beat, mido.Message("note_on", note=p, velocity=80)),
                   (call_t0 + (s + d) * beat, mido.Message("note_off", note=p))]
    for t, m in sorted(events, key=lambda e: (e[0], e[1].type != "note_off")):
        rig.feed(t, m)
    a = rig.engine.answer
    assert a is not None
    assert a.start == pytest.approx(t0 + 12 * beat, abs=1e-3)  # the clock's fourth bar


def test_the_plan_and_the_rule():
    # a last onset a quarter or a sixteenth before a bar line: that bar line; closer: the next
    p = plan(3.0, 0.75, 0.0, 4, 1.0)
    assert p.line == pytest.approx(4.0) and p.bars == 1
    assert plan(3.75, 0.9375, 0.0, 4, 1.0).line == pytest.approx(4.0)
    p = plan(3.875, 0.96875, 0.0, 4, 1.0)
    assert p.line == pytest.approx(8.0) and p.bars == 2
    # a call that began in a bar's second half began with a pickup to the next bar line
    assert plan(10.0, 2.5, 0.75, 4, 1.0).bars == 2
    turn = Turn()
    assert turn.ended(2, True, False, False) and turn.ended(1, False, True, False)
    assert not turn.ended(2, False, False, False)  # a short note off the key's chord
    assert not turn.ended(3, True, True, False)  # not a trading length
    assert turn.ended(3, False, False, True)  # but silent a whole bar
    turn.answered(4)
    assert not turn.ended(2, True, True, False)  # shorter than the turn
    assert turn.ended(4, False, False, False)  # the turn's length
    assert on_grid([0, 1, 1.5, 2, 3.25]) and on_grid([0, 0.33, 0.67, 1, 2.02])
    assert not on_grid([0, 1.42, 2.58, 3.42])
