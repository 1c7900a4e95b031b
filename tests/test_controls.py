"""MIDI controls: each mapped CC changes its setting; mute, panic, reset; the state CC out.

The unit part drives Controls on an engine directly; the live part runs the real threads on
the demo's loopback (as test_live.py does), asserting order, not latency.
"""

from __future__ import annotations

import mido
import pytest
from support import LOOP_CALL as CALL
from support import EngineRig, make_config, play, wait_for

from companion.config import ConfigError
from companion.midi.loopback import LoopbackIn, LoopbackOut
from companion.realtime.controls import ANSWERING, LISTENING, StateOut
from companion.realtime.live import Live

MAP = {"temperature": 20, "length": 21, "style_weight": 22, "key_strength": 23, "mute": 24,
       "panic": 25, "reset_style": 26, "state_out": 27}


def cc(control, value, channel=0):
    return mido.Message("control_change", control=control, value=value, channel=channel)


@pytest.fixture
def unit(model, model_pkg):
    """The controls of a Live that is not started: CCs handled on this thread."""
    cfg = make_config(model_pkg, controls={**MAP, "channel": 2, "temperature_max": 2.0},
                      answer={"max_beats": 16})
    calls = {"mute": [], "panic": 0}

    def event(kind, t, **data):
        if kind == "control" and data["name"] == "mute":
            calls["mute"].append(data["value"])
        elif kind == "control" and data["name"] == "panic":
            calls["panic"] += 1

    lv = Live(cfg, model, LoopbackIn(), LoopbackOut(), seed=1, on_event=event)
    return lv.controls, lv.engine, calls


def test_continuous_controls(unit):
    ctl, engine, _ = unit
    assert ctl.handle(cc(20, 127, channel=1))
    assert engine.sampler.temperature == pytest.approx(2.0)
    ctl.handle(cc(20, 0, channel=1))
    assert engine.sampler.temperature == 0.0
    ctl.handle(cc(21, 127, channel=1))
    assert engine.setting("answer.length") == 16.0
    ctl.handle(cc(21, 32, channel=1))
    assert engine.setting("answer.length") == 4.0
    ctl.handle(cc(21, 0, channel=1))
    assert engine.setting("answer.length") == "call"
    ctl.handle(cc(22, 127, channel=1))
    assert engine.style.weight == 1.0
    ctl.handle(cc(23, 0, channel=1))
    assert engine.key_bias.strength == 0.0


def test_engine_settings_are_checked_and_its_own(model, model_pkg):
    cfg = make_config(model_pkg, answer={"temperature": 0.9, "length": "call"})
    engine = EngineRig(model, cfg, 1).engine
    assert engine.set("answer.temperature", 1) == 1.0 and engine.sampler.temperature == 1.0
    assert engine.set("answer.length", 8) == 8.0
    assert engine.set("key.strength", 0.25) == 0.25 and engine.key_bias.strength == 0.25
    assert engine.set("style.max_repeat", 2) == 2 and engine.max_repeat == 2
    assert cfg.answer.temperature == 0.9 and cfg.answer.length == "call"  # not the engine's
    assert cfg.key.strength == 0.9 and cfg.style.max_repeat == 3
    before = engine.settings()
    for name, value, error in [
        ("answer.temperature", 9, "answer.temperature: expected a number in 0..5, got 9"),
        ("style.weight", True, "style.weight: expected a number, got True"),
        ("answer.length", "long", "answer.length: expected \"call\" or a number of beats"),
        ("answer.barge_in", "maybe", "answer.barge_in: expected one of stop, keep"),
        ("listen.tempo_bpm", 100, "listen.tempo_bpm: not a setting that can change while "
                                  "playing"),
    ]:
        with pytest.raises(ConfigError, match=error):
            engine.set(name, value)
    assert engine.settings() == before and engine.sampler.temperature == 1.0
    assert engine.set_muted(True) and engine.muted and not engine.set_muted(True)


def test_channel_and_unmapped_ccs_pass(unit):
    ctl, engine, _ = unit
    t = engine.sampler.temperature
    assert not ctl.handle(cc(20, 127, channel=0))  # another channel
    assert not ctl.handle(cc(64, 127, channel=1))  # not mapped (the sustain pedal)
    assert not ctl.handle(mido.Message("note_on", note=60, channel=1))
    assert engine.sampler.temperature == t


def test_switches_and_triggers(unit):
    ctl, engine, calls = unit
    ctl.handle(cc(24, 127, channel=1))
    assert engine.muted and calls["mute"] == [True]
    ctl.handle(cc(24, 100, channel=1))  # still on: nothing new
    assert calls["mute"] == [True, True] and engine.muted
    ctl.handle(cc(24, 0, channel=1))
    assert not engine.muted and calls["mute"] == [True, True, False]
    for v in (127, 127, 0, 90):  # fires when crossing 64 upwards
        ctl.handle(cc(25, v, channel=1))
    assert calls["panic"] == 2
    engine.style.learn([1, 2, 3])
    ctl.handle(cc(26, 127, channel=1))
    assert engine.style.empty


def test_config_checks_controls():
    with pytest.raises(ConfigError, match="controls.panic: CC 20 is already controls.mute"):
        make_config(None, controls={"panic": 20, "mute": 20})
    with pytest.raises(ConfigError, match="controls.panic: expected a number in 0..119"):
        make_config(None, controls={"panic": 123})
    with pytest.raises(ConfigError, match="controls.pedal: unknown key"):
        make_config(None, controls={"pedal": 1})


def test_state_out_sends_changes_only():
    sent = []
    st = StateOut(27, 3, sent.append)
    for v in (LISTENING, LISTENING, ANSWERING, ANSWERING, LISTENING):
        st.set(v)
    assert [(m.control, m.value, m.channel) for m in sent] == [(27, 0, 3), (27, 127, 3),
                                                               (27, 0, 3)]
    StateOut(None, 0, sent.append).set(ANSWERING)
    assert len(sent) == 3


# -- live ----------------------------------------------------------------------------------


@pytest.fixture
def live(model, model_pkg):
    made = []

    def make(**controls):
        cfg = make_config(model_pkg, listen={"tempo_bpm": 240.0, "phrase_end_beats": 1},
                          answer={"length": 2, "min_beats": 1, "max_beats": 2},
                          controls={"mute": 24, "panic": 25, "state_out": 27, **controls})
        inport, out = LoopbackIn(), LoopbackOut()
        lv = Live(cfg, model, inport, out, seed=4)
        lv.start()
        made.append(lv)
        return lv, inport, out

    yield make
    for lv in made:
        lv.stop()


def states(out):
    return [m.value for _, m in out.messages() if m.type == "control_change" and m.control == 27]


def test_live_state_cc_follows_the_turns(live):
    lv, inport, out = live()
    assert states(out) == [LISTENING]
    play(inport, CALL)
    wait_for(lambda: states(out) == [LISTENING, ANSWERING, LISTENING])
    msgs = out.messages()
    i_ans = next(i for i, (_, m) in enumerate(msgs) if m.type == "control_change"
                 and m.control == 27 and m.value == ANSWERING)
    i_end = max(i for i, (_, m) in enumerate(msgs) if m.type == "control_change"
                and m.control == 27)
    ons = [i for i, (_, m) in enumerate(msgs) if m.type == "note_on" and m.velocity > 0]
    offs = [i for i, (_, m) in enumerate(msgs) if m.type == "note_off"]
    assert ons and i_ans < ons[0] and i_end > max(offs)


def test_live_mute_listens_without_answering_and_panic(live):
    lv, inport, out = live()
    inport.deliver(cc(24, 127))
    wait_for(lambda: lv.engine.muted)
    play(inport, CALL)
    wait_for(lambda: lv.engine.listener.notes == [] and lv.engine.style.tokens_seen > 0)
    assert not any(m.type == "note_on" for _, m in out.messages())
    inport.deliver(cc(24, 0))
    wait_for(lambda: not lv.engine.muted)
    play(inport, CALL)
    wait_for(lambda: any(m.type == "note_on" for _, m in out.messages()))
    n = len(out.messages())
    inport.deliver(cc(25, 127))
    wait_for(lambda: any(m.type == "control_change" and m.control == 123
                         for _, m in out.messages()[n:]))
    assert not lv.scheduler.busy(lv.engine.answer.id)


def test_posted_controls_take_the_engine_thread_and_reply(live):
    """Live.post: applied on the engine thread in order with the MIDI, a reply for each, a
    bad one refused with the config's one-line reason and nothing changed."""
    lv, inport, out = live()
    replies: list = []
    assert lv.post("answer.temperature", 0.5, replies.append)
    assert lv.post("answer.temperature", 99, replies.append)
    assert lv.post("nonsense", 1, replies.append)
    assert lv.post("mute", "loud", replies.append)
    assert lv.post("mute", True, replies.append)
    wait_for(lambda: len(replies) == 5)
    assert replies[0] is None and replies[4] is None
    assert replies[1].startswith("answer.temperature: expected a number in 0..5")
    assert replies[2].startswith("nonsense: not a setting")
    assert replies[3].startswith("mute: expected on or off")
    assert lv.engine.setting("answer.temperature") == 0.5 and lv.engine.muted
