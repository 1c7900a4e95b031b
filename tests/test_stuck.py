"""Never stuck: a key whose note-off never comes, or a sustain pedal left down, holds the
call open for ``listen.held_limit_beats`` at most; the engine then ends the call with no
further input and says which keys it dropped, and the status lists the keys it counts as
held. All Notes Off and All Sound Off let every key go at once. On the virtual clock."""

from __future__ import annotations

import mido
import pytest
from support import ENGINE_CALL as CALL
from support import EngineRig, make_config

from companion.config import Config
from companion.midi.loopback import LoopbackIn, LoopbackOut
from companion.realtime.clock import VirtualClock
from companion.realtime.live import Live

TEMPO = 120.0
BEAT = 60.0 / TEMPO
WAIT_BEATS = 1.0
#: The shipped held limit, in beats.
LIMIT = Config().listen.held_limit_beats
#: The stray key: `90 30 40`, C3 on channel 1, under every note of CALL.
STRAY = 0x30


def on(note: int, channel: int = 0) -> mido.Message:
    return mido.Message("note_on", note=note, velocity=0x40, channel=channel)


def off(note: int) -> mido.Message:
    return mido.Message("note_off", note=note)


def cc(control: int, value: int) -> mido.Message:
    return mido.Message("control_change", control=control, value=value)


def rig_of(model, model_pkg, **time) -> EngineRig:
    return EngineRig(model, make_config(
        model_pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": WAIT_BEATS},
        answer={"length": 4, "max_beats": 4}, time=time))


def test_a_lost_note_off_holds_the_call_only_until_the_held_limit(model, model_pkg):
    rig = rig_of(model, model_pkg)
    rig.at(0.0, on(STRAY))  # its note-off never comes
    released = rig.play(CALL, t0=0.5)
    held_end = LIMIT * BEAT
    assert released < held_end
    # known while the key is held: the engine wakes for it with nothing more played
    assert rig.engine.next_deadline() == pytest.approx(held_end + WAIT_BEATS * BEAT)
    rig.until(20.0)
    [answer] = rig.events_of("phrase_end")
    assert answer["decided"] == pytest.approx(held_end + WAIT_BEATS * BEAT)
    assert answer["call"] == 1 + len(CALL) and answer["notes"] >= 1  # the stray key first
    [stuck] = rig.events_of("stuck")
    assert stuck["keys"] == [(0, STRAY)] and stuck["pedal"] == [] and stuck["beats"] == LIMIT
    assert stuck["t"] == pytest.approx(answer["t"])
    assert rig.engine.listener.held_keys() == []

    # the next call is answered after the usual wait; the late note-off changes nothing
    rig.at(21.0, off(STRAY))
    released = rig.play(CALL, t0=22.0)
    rig.until(40.0)
    assert rig.events_of("phrase_end")[1]["decided"] == pytest.approx(
        released + WAIT_BEATS * BEAT)
    assert len(rig.events_of("stuck")) == 1


def test_the_held_limit_changes_while_playing(model, model_pkg):
    rig = rig_of(model, model_pkg)
    rig.at(0.0, on(STRAY))
    assert rig.engine.next_deadline() == pytest.approx((LIMIT + WAIT_BEATS) * BEAT)
    assert rig.engine.set("listen.held_limit_beats", 2) == 2.0
    assert rig.engine.next_deadline() == pytest.approx((2 + WAIT_BEATS) * BEAT)
    rig.until(10.0)
    [answer] = rig.events_of("phrase_end")
    assert answer["call"] == 1 and answer["decided"] == pytest.approx(1.5)
    assert [e["keys"] for e in rig.events_of("stuck")] == [[(0, STRAY)]]


def test_a_sustain_pedal_left_down_holds_one_call_at_most(model, model_pkg):
    rig = rig_of(model, model_pkg, sustain_holds=True)
    rig.at(0.0, cc(64, 127))  # never let go
    released = rig.play(CALL, t0=0.5)  # every key released, the pedal holds them
    held_end = LIMIT * BEAT  # from the pedal's press
    assert released < held_end
    assert rig.engine.next_deadline() == pytest.approx(held_end + WAIT_BEATS * BEAT)
    rig.until(10.0)
    [first] = rig.events_of("phrase_end")
    assert first["decided"] == pytest.approx(held_end + WAIT_BEATS * BEAT)
    [stuck] = rig.events_of("stuck")
    assert stuck["keys"] == [] and stuck["pedal"] == sorted({(0, p) for p, _, _ in CALL})

    # the pedal still down holds nothing more: the next call ends at the usual wait
    released = rig.play(CALL, t0=10.0)
    assert rig.engine.next_deadline() == pytest.approx(released + WAIT_BEATS * BEAT)
    rig.until(20.0)
    # let go and pressed again, it holds the next call (for the limit from its press)
    rig.at(20.0, cc(64, 0))
    rig.at(21.0, cc(64, 127))
    released = rig.play(CALL, t0=21.5)
    assert released < 21.0 + held_end
    assert rig.engine.next_deadline() == pytest.approx(21.0 + held_end + WAIT_BEATS * BEAT)
    let_go = 21.0 + held_end - 0.2
    rig.at(let_go, cc(64, 0))  # within the limit: the call ends from there
    assert rig.engine.next_deadline() == pytest.approx(let_go + WAIT_BEATS * BEAT)
    assert len(rig.events_of("stuck")) == 1


@pytest.mark.parametrize("control", [123, 120], ids=["all_notes_off", "all_sound_off"])
def test_all_notes_off_lets_every_key_go(model, model_pkg, control):
    rig = rig_of(model, model_pkg, sustain_holds=True)
    rig.at(0.0, on(STRAY))
    rig.at(0.1, on(36, channel=9))  # another lost note-off, on another channel
    rig.at(0.2, cc(64, 127))
    released = rig.play(CALL, t0=0.5)  # held by the pedal
    assert len(rig.engine.listener.held_keys()) == 2 + len({p for p, _, _ in CALL})
    rig.at(released + 0.2, cc(control, 0))
    assert rig.engine.listener.held_keys() == []
    assert rig.engine.next_deadline() == pytest.approx(released + 0.2 + WAIT_BEATS * BEAT)
    rig.until(20.0)
    [answer] = rig.events_of("phrase_end")
    assert answer["decided"] == pytest.approx(released + 0.2 + WAIT_BEATS * BEAT)
    assert rig.events_of("stuck") == []


def test_the_status_lists_the_keys_held_and_the_log_names_each_dropped(model, model_pkg):
    cfg = make_config(model_pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": WAIT_BEATS},
                      time={"sustain_holds": True}, session={"enabled": False})
    clock, lines = VirtualClock(), []
    live = Live(cfg, model, LoopbackIn(), LoopbackOut(), clock=clock, seed=1,
                log=lines.append)
    engine = live.engine
    assert live.status()["held"] == []
    engine.on_message(on(STRAY), 0.0)
    engine.on_message(cc(64, 127), 0.1)
    engine.on_message(on(60, channel=2), 0.2)
    engine.on_message(off(60).copy(channel=2), 0.3)  # released: held by the pedal
    assert live.status()["held"] == ["C3", "C4"]
    assert not [ln for ln in lines if "held" in ln]
    clock.set(LIMIT * BEAT + 0.2)  # past both limits (the key's from 0, the pedal's from 0.1)
    assert engine.poll(clock.now()) is None  # the phrase end is a beat later
    assert live.status()["held"] == []
    assert lines == [
        f"key C3 (channel 1) held {LIMIT:g} beats without its note-off: no longer counted "
        f"as held",
        f"sustain pedal down {LIMIT:g} beats: the keys it held (C4) no longer count as "
        f"held, nor any until it is let go",
    ]
