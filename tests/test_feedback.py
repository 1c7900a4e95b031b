"""Feedback loops (companion.realtime.echo): the companion's own notes coming back on its
input are ignored, a loop is said once and shown in the status, and nothing is answered.
The guard on given times, then the live wiring on the in-process loopback with its output
wired back to its input (a DAW's MIDI thru). The same over JACK: test_names_jack.py."""

from __future__ import annotations

import time

import mido
import pytest
from support import LOOP_BEAT as BEAT
from support import LOOP_CALL as CALL
from support import LOOP_TEMPO as TEMPO
from support import make_config, play, wait_for

from companion.midi.loopback import LoopbackIn
from companion.realtime.echo import ECHO_WINDOW_S, LOOP_NOTES, EchoGuard
from companion.realtime.live import Live


def on(pitch: int, velocity: int = 80, channel: int = 0) -> mido.Message:
    return mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)


def off(pitch: int, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", note=pitch, channel=channel)


# -- the guard, on given times -------------------------------------------------------------


def test_a_note_sent_and_heard_back_at_once_is_ignored_with_its_note_off():
    g = EchoGuard()
    g.sent(on(60, 90), 1.000)
    assert g.heard(on(60, 90, channel=3), 1.004)  # a DAW may move it to another channel
    g.sent(off(60), 1.2)
    assert g.heard(on(60, 0, channel=3), 1.21)  # a note-off, as note-on velocity 0
    assert not g.heard(off(60), 1.22)  # only once
    assert g.echoes == 1 and not g.loop


def test_the_performers_notes_are_heard():
    g = EchoGuard()
    g.sent(on(60, 90), 1.0)
    assert not g.heard(on(62, 90), 1.01)  # another pitch
    assert not g.heard(on(60, 91), 1.01)  # another velocity
    assert not g.heard(on(60, 90), 1.0 + ECHO_WINDOW_S + 0.01)  # too late
    assert not g.heard(on(64, 90), 0.5)
    g.sent(on(64, 90), 1.0)
    assert not g.heard(on(64, 90), 0.9)  # before it was sent
    assert not g.heard(off(62), 1.1) and g.echoes == 0


def test_each_note_sent_comes_back_once():
    g = EchoGuard()
    g.sent(on(60, 90), 1.0)
    assert g.heard(on(60, 90), 1.01)
    assert not g.heard(on(60, 90), 1.02)  # the performer, in unison


def test_the_performers_own_key_releases_even_after_an_echo_of_its_pitch():
    """An echo whose note-off never came must not swallow the performer's release later."""
    g = EchoGuard()
    g.sent(on(60, 90), 1.0)
    assert g.heard(on(60, 90), 1.01)
    assert not g.heard(on(60, 70), 3.0)
    g.sent(off(60), 3.5)
    assert not g.heard(off(60), 3.5)


def test_a_key_released_before_its_echo_is_heard_released():
    """midi.passthrough in a loop: the performer's note goes out and comes back (ignored);
    the performer's release comes before the companion sends it on, and is heard."""
    g = EchoGuard()
    assert not g.heard(on(62, 77), 1.0)
    g.sent(on(62, 77), 1.001)
    assert g.heard(on(62, 77), 1.005)
    assert not g.heard(off(62), 1.5)  # the performer's
    g.sent(off(62), 1.501)
    assert g.heard(off(62), 1.505)  # its echo


def test_several_echoes_in_a_row_are_a_loop_and_notes_that_stop_coming_back_end_it():
    g = EchoGuard()
    t = 10.0
    for i in range(LOOP_NOTES):
        assert not g.loop
        g.sent(on(60 + i, 80), t)
        assert g.heard(on(60 + i, 80), t + 0.02)
        g.sent(off(60 + i), t + 0.1)
        assert g.heard(off(60 + i), t + 0.11)
        t += 0.25
    assert g.loop and g.looping(t)
    # the performer plays meanwhile: still a loop
    assert not g.heard(on(70, 100), t)
    assert g.looping(t)
    # the thru is cut: the next notes sent do not come back
    for i in range(LOOP_NOTES):
        g.sent(on(60 + i, 80), t)
        t += 0.5
    assert not g.looping(t)


def test_echoes_not_in_a_row_are_no_loop():
    g = EchoGuard()
    for i in range(2 * LOOP_NOTES):
        t = 10.0 + i
        g.sent(on(60, 80), t)
        if i % 2:
            assert g.heard(on(60, 80), t + 0.01)
        else:
            assert not g.heard(on(62, 80), t + 0.01)
    assert g.echoes == LOOP_NOTES and not g.loop


# -- the live wiring, its output wired back to its input ----------------------------------


@pytest.fixture
def looped(model, model_pkg):
    """A Live whose output comes straight back on its input while ``thru[0]`` is on; yields
    (live, input port, what it sent (time, message), events, log lines, thru)."""
    cfg = make_config(model_pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1},
                      answer={"length": 4, "min_beats": 4, "max_beats": 4})
    inport = LoopbackIn()
    sent: list[tuple[float, mido.Message]] = []
    thru = [True]

    class Thru:
        def send(self, msg: mido.Message) -> None:
            sent.append((time.perf_counter(), msg))
            if thru[0]:
                inport.deliver(msg)

        def close(self) -> None:
            pass

    events: list = []
    lines: list[str] = []
    live = Live(cfg, model, inport, Thru(), seed=4, log=lines.append,
                on_event=lambda k, t, **d: events.append((k, t, d)))
    live.start()
    try:
        yield live, inport, sent, events, lines, thru
    finally:
        live.stop()


def test_a_loop_is_said_once_shown_in_the_status_and_not_answered(looped):
    live, inport, sent, events, lines, thru = looped
    assert live.status()["feedback_loop"] is False
    play(inport, CALL)
    wait_for(lambda: any(k == "phrase_end" for k, _, _ in events))
    answer = live.engine.answer
    assert answer is not None and len(answer.notes) >= LOOP_NOTES
    n = len(answer.notes)
    # the answer plays out whole (its echoes are no barge-in) ...
    wait_for(lambda: sum(k == "note_off" for k, _, _ in events) >= n, what="answer over")
    assert not any(k == "barge_in" for k, _, _ in events)
    # ... and is not answered: no second phrase end in the time of several
    time.sleep(6 * BEAT)
    assert [k for k, _, _ in events].count("phrase_end") == 1, lines
    assert live.status()["feedback_loop"] is True
    said = [ln for ln in lines if ln.startswith("feedback loop:")]
    assert len(said) == 1, lines
    assert [d for k, _, d in events if k == "feedback_loop"] == [{"loop": True}]
    assert live.notes_heard == len(CALL)  # the echoes were never heard as playing
    assert live.echo.echoes == n

    # the thru is cut: the next answer does not come back, and the loop is over
    thru[0] = False
    play(inport, CALL)
    wait_for(lambda: [k for k, _, _ in events].count("phrase_end") == 2, what="second answer")
    wait_for(lambda: live.status()["feedback_loop"] is False, timeout=10 + 8 * BEAT,
             what="loop not over")
    wait_for(lambda: any(ln.startswith("feedback loop gone") for ln in lines))
    assert [d for k, _, d in events if k == "feedback_loop"] == [{"loop": True}, {"loop": False}]
    assert len([ln for ln in lines if ln.startswith("feedback loop:")]) == 1


def test_passthrough_in_a_loop_echoes_each_note_once(model, model_pkg):
    """With midi.passthrough the companion plays the performer's notes too: in a loop each
    comes back once and is not played again."""
    cfg = make_config(model_pkg, listen={"tempo_bpm": TEMPO}, midi={"passthrough": True})
    inport = LoopbackIn()
    sent: list[mido.Message] = []

    class Thru:
        def send(self, msg):
            sent.append(msg)
            inport.deliver(msg)

        def close(self):
            pass

    live = Live(cfg, model, inport, Thru(), seed=4)
    live.start()
    try:
        inport.deliver(on(62, 77))
        wait_for(lambda: live.echo.echoes == 1)
        time.sleep(0.1)
        assert [m.note for m in sent if m.type == "note_on" and m.velocity] == [62]
        inport.deliver(off(62))
        wait_for(lambda: any(m.type == "note_off" for m in sent))
        wait_for(lambda: live.echo.echoes == 1 and not live.echo._held)
        wait_for(lambda: not live.engine.listener.held)  # the key is up
    finally:
        live.stop()
