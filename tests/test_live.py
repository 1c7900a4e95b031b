"""The live wiring (input queue, engine thread, scheduler thread, passthrough, stop) on the
in-process loopback (companion.midi.loopback): real threads and clock, no MIDI system.
Ordering, not latency."""

from __future__ import annotations

import gc
import time

import mido
import pytest
from support import LOOP_BEAT as BEAT
from support import LOOP_CALL as CALL
from support import LOOP_TEMPO as TEMPO
from support import make_config, play, wait_for

from companion.midi.loopback import LoopbackIn, LoopbackOut
from companion.realtime.live import Live


@pytest.fixture
def rig(model, model_pkg):
    made = []

    def make(**sections):
        sections.setdefault("listen", {})
        sections["listen"] = {"tempo_bpm": TEMPO, "phrase_end_beats": 1, **sections["listen"]}
        cfg = make_config(model_pkg, **sections)
        events = []
        inport, out = LoopbackIn(), LoopbackOut()
        live = Live(cfg, model, inport, out, seed=4,
                    on_event=lambda k, t, **d: events.append((k, t, d)))
        live.start()
        made.append(live)
        return live, inport, out, events

    yield make
    for live in made:
        live.stop()


def matched(msgs) -> bool:
    sounding = set()
    for _, m in msgs:
        if m.type == "note_on" and m.velocity > 0:
            sounding.add(m.note)
        elif m.type in ("note_on", "note_off"):
            sounding.discard(m.note)
    return not sounding


def test_answer_then_stop_leaves_nothing_sounding(rig):
    live, inport, out, events = rig(answer={"length": 8, "max_beats": 8})
    released = play(inport, CALL)
    wait_for(lambda: any(k == "note_on" for k, _, _ in events))
    ons = [t for t, m in out.messages() if m.type == "note_on"]
    assert ons[0] > released + 1 * BEAT
    # the hooks a benchmark needs, in causal order
    note_in = [(t, d) for k, t, d in events if k == "note_in"]
    assert len(note_in) == len(CALL) and all(d["received"] <= t for t, d in note_in)
    (_, t_end, d_end), = [e for e in events if e[0] == "phrase_end"]
    first = next(t for k, t, d in events if k == "note_on" and d["index"] == 0)
    assert d_end["deadline"] <= t_end <= first
    live.stop()
    msgs = out.messages()
    assert matched(msgs)
    assert msgs[-1][1].type == "control_change" and msgs[-1][1].control == 123
    assert msgs[0][1].type == "control_change" and msgs[0][1].control == 123  # at start too


def test_performer_barging_in_stops_the_answer(rig):
    live, inport, out, events = rig(answer={"length": 16, "min_beats": 16, "max_beats": 16})
    play(inport, CALL)
    wait_for(lambda: any(k == "note_on" for k, _, _ in events))
    inport.deliver(mido.Message("note_on", note=60, velocity=90))
    wait_for(lambda: any(k == "barge_in" for k, _, _ in events))
    t_cut = next(t for k, t, _ in events if k == "barge_in")
    time.sleep(6 * BEAT)
    late = [m for t, m in out.messages() if t > t_cut and m.type == "note_on"]
    assert late == []  # the answer is over; no new one while the key is held
    inport.deliver(mido.Message("note_off", note=60))
    wait_for(lambda: len([e for e in events if e[0] == "phrase_end"]) == 2)
    live.stop()
    assert matched(out.messages())


def test_barge_in_keep_plays_on(rig):
    live, inport, out, events = rig(answer={"length": 8, "min_beats": 8, "barge_in": "keep"})
    play(inport, CALL)
    wait_for(lambda: any(k == "note_on" for k, _, _ in events))
    inport.deliver(mido.Message("note_on", note=60, velocity=90))
    answer = live.engine.answer
    n = len(answer.notes) if answer is not None else 0
    wait_for(lambda: sum(k == "note_on" for k, _, _ in events) >= n)
    assert not any(k == "barge_in" for k, _, _ in events)
    inport.deliver(mido.Message("note_off", note=60))


def test_passthrough_and_channel_filter(rig):
    live, inport, out, events = rig(midi={"passthrough": True, "input_channel": 3,
                                          "output_channel": 5})
    inport.deliver(mido.Message("note_on", note=50, velocity=70, channel=0))  # not listened to
    inport.deliver(mido.Message("note_on", note=62, velocity=70, channel=2))
    wait_for(lambda: any(m.type == "note_on" for _, m in out.messages()))
    time.sleep(0.05)
    echoed = [m for _, m in out.messages() if m.type == "note_on"]
    assert [(m.note, m.channel) for m in echoed] == [(62, 4)]
    live.stop()  # the echoed note is still held: stop turns it off
    msgs = out.messages()
    assert any(m.type == "note_off" and m.note == 62 and m.channel == 4 for _, m in msgs)
    assert all(m.channel == 4 for _, m in msgs)


def test_strange_messages_never_stop_it(rig):
    live, inport, out, events = rig()
    for m in (mido.Message("sysex", data=[0x7E, 1, 2]), mido.Message("clock"),
              mido.Message("pitchwheel", pitch=-8000), mido.Message("note_off", note=99),
              mido.Message("control_change", control=64, value=127),
              mido.Message("polytouch", note=60, value=10), object()):
        inport.deliver(m)
    released = play(inport, CALL)
    wait_for(lambda: any(k == "note_on" for k, _, _ in events))
    assert [t for t, m in out.messages() if m.type == "note_on"][0] > released


def test_model_kept_warm_in_a_call_and_until_its_end_not_when_idle(rig, model, monkeypatch):
    warms = []
    real = model.warm
    monkeypatch.setattr(model, "warm", lambda: (warms.append(time.perf_counter()), real()))
    live, inport, _, events = rig(listen={"phrase_end_beats": 2})  # 0.5 s
    inport.deliver(mido.Message("note_on", note=60, velocity=80))
    time.sleep(0.3)
    held = len(warms)  # a key held: no phrase end due yet, but a call going on
    inport.deliver(mido.Message("note_off", note=60))
    wait_for(lambda: any(k == "phrase_end" for k, _, _ in events))
    waiting = len(warms) - held
    time.sleep(0.1)
    before = len(warms)
    time.sleep(0.3)  # answered, nothing played: idle
    print(f"warms: {held} with a key held 0.3 s, {waiting} until the phrase end 0.5 s later, "
          f"{len(warms) - before} idle 0.3 s")
    assert held >= 10 and waiting >= 15
    assert len(warms) == before


def test_arrival_is_the_ports_stamp_when_it_stamps_on_the_live_clock(rig):
    live, inport, _, _ = rig()

    class Stamping:  # a polled port (companion.midi.input): msg.time is its arrival
        clock = time.perf_counter

    now = time.perf_counter()
    assert live._arrival(mido.Message("note_on", time=now - 0.02), Stamping) == now - 0.02
    for bad in (now + 5.0, now - 30.0, 0.0):  # later than now, too old: not believed
        t = live._arrival(mido.Message("note_on", time=bad), Stamping)
        assert now <= t <= time.perf_counter()
    t = live._arrival(mido.Message("note_on", time=now - 0.02), inport)  # stamps nothing
    assert t >= now


def test_settled_heap_sets_the_objects_alive_aside_until_it_ends():
    from companion.commands.live import settled_heap

    assert gc.get_freeze_count() == 0
    alive = [[i] for i in range(20_000)]
    with settled_heap():
        assert gc.get_freeze_count() >= len(alive)
    assert gc.get_freeze_count() == 0


def test_live_run_plays_with_the_start_up_heap_set_aside(monkeypatch, model_pkg):
    """`companion live` collects once and freezes what it loaded before it starts playing:
    a full collection of it holds the GIL 4 to 8 ms, about a JACK period."""
    import companion.commands.live as live_mod
    import companion.midi.ports as ports_mod
    from companion.midi.ports import OpenPorts

    frozen: list[int] = []

    def start(self):
        frozen.append(gc.get_freeze_count())
        raise RuntimeError("stop before playing")

    monkeypatch.setattr(ports_mod, "open_ports",
                        lambda *a: OpenPorts(LoopbackIn(), LoopbackOut(), "loop:in", "loop:out"))
    monkeypatch.setattr(Live, "start", start)
    cfg = make_config(model_pkg, session={"enabled": False})
    with pytest.raises(RuntimeError, match="stop before playing"):
        live_mod.run(cfg)
    assert frozen and frozen[0] > 10_000  # the modules, the model, the config: all set aside
    assert gc.get_freeze_count() == 0


def test_swapped_ports_take_over_from_the_old_ones(rig):
    """The port watcher's seams: a new input is listened to and the old one no longer; the
    answer goes to the new output only."""
    live, inport, out, _ = rig(answer={"length": 2, "min_beats": 1, "max_beats": 2})
    new_in, new_out = LoopbackIn(), LoopbackOut()
    assert live.swap_input(new_in) is inport and live.swap_output(new_out) is out
    assert inport.callback is None
    n = len(out.messages())
    play(new_in, CALL)
    wait_for(lambda: any(m.type == "note_on" for _, m in new_out.messages()))
    assert len(out.messages()) == n


def test_a_failing_output_swapped_in_is_said_again(model, model_pkg):
    class Dead:
        def send(self, msg):
            raise OSError("port gone")

    lines: list[str] = []
    live = Live(make_config(model_pkg), model, LoopbackIn(), Dead(), log=lines.append)
    live.all_notes_off()
    live.all_notes_off()
    assert len(lines) == 1 and "port gone" in lines[0]  # said once per port
    live.swap_output(Dead())
    live.all_notes_off()
    assert len(lines) == 2 and "cannot send to the output port" in lines[1]
