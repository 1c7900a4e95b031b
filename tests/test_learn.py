"""MIDI learn (companion.realtime.learn): the next CC that moves becomes a control, at once and
in the config file, whose comments stay and which is never half-written. On the in-process
loopback, and `companion live --learn` over JACK."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import mido
import pytest
import yaml
from support import LOOP_TEMPO as TEMPO
from support import ROOT, make_config, wait_for, write_config

from companion import config as config_mod
from companion.config import ConfigError
from companion.live_controls import CC_CONTROLS, LEARN_ALL
from companion.midi.loopback import LoopbackIn, LoopbackOut
from companion.realtime.learn import save_control, set_controls_key
from companion.realtime.live import Live

RIG = """\
# my rig: the pedalboard on channel 1
controls:
  # which channel the pedals send on
  channel: omni
  # the mute pedal
  mute: 64   # the left one
  state_out: null
# after controls
answer:
  temperature: 0.9  # warm
"""


def cc(control: int, value: int, channel: int = 0) -> mido.Message:
    return mido.Message("control_change", control=control, value=value, channel=channel)




def changed_lines(a: str, b: str) -> list[tuple[str, str]]:
    la, lb = a.splitlines(), b.splitlines()
    assert len(la) == len(lb)
    return [(x, y) for x, y in zip(la, lb, strict=True) if x != y]


# -- editing the file ----------------------------------------------------------------------


def test_a_key_is_set_in_place_with_its_comment():
    out = set_controls_key(RIG, "mute", 20)
    assert changed_lines(RIG, out) == [("  mute: 64   # the left one",
                                        "  mute: 20  # the left one")]
    assert yaml.safe_load(out)["controls"]["mute"] == 20
    out = set_controls_key(RIG, "mute", None)
    assert yaml.safe_load(out)["controls"]["mute"] is None


def test_a_missing_key_or_section_is_added():
    out = set_controls_key(RIG, "temperature", 21)
    assert out.replace("  temperature: 21\n", "", 1) == RIG
    assert yaml.safe_load(out)["controls"]["temperature"] == 21
    assert yaml.safe_load(out)["answer"]["temperature"] == 0.9  # the other section's key
    bare = "# nothing but this\nanswer:\n  temperature: 0.5\n"
    out = set_controls_key(bare, "panic", 5)
    assert out == bare + "controls:\n  panic: 5\n"
    assert set_controls_key("", "panic", 5) == "controls:\n  panic: 5\n"


def test_the_shipped_config_keeps_every_comment():
    text = (ROOT / "config.yaml").read_text()
    for name in CC_CONTROLS:
        out = set_controls_key(text, name, 100)
        (old, new), = changed_lines(text, out)
        assert old.split(":")[0] == new.split(":")[0] == f"  {name}"
        assert getattr(config_mod.from_dict(yaml.safe_load(out)).controls, name) == 100


def test_save_is_atomic_and_checked(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(RIG)
    path.chmod(0o600)
    save_control(path, "temperature", 21, [])
    assert config_mod.load(path).controls.temperature == 21
    assert path.stat().st_mode & 0o777 == 0o600
    # a CC that would clash (mute has 64) is refused and the file left as it was
    before = path.read_text()
    with pytest.raises(ConfigError, match=r"not saved: the edited file would not load "
                                          r"\(controls\.mute: CC 64 is already"):
        save_control(path, "temperature", 64, [])
    assert path.read_text() == before
    save_control(path, "temperature", 64, ["mute"])  # mute gives it up
    cfg = config_mod.load(path)
    assert cfg.controls.temperature == 64 and cfg.controls.mute is None
    assert "# the left one" in path.read_text() and "# after controls" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no temp files


def test_never_half_written(tmp_path):
    """A reader reading the file over and over while it is saved 300 times: every read is a
    whole file that loads, the old one or the new one."""
    path = tmp_path / "config.yaml"
    path.write_text((ROOT / "config.yaml").read_text())
    seen: list[int | None] = []
    bad: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.append(config_mod.load(path).controls.temperature)
            except Exception as e:  # noqa: BLE001 - what a half-written file would give
                bad.append(f"{type(e).__name__}: {e}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(300):
            save_control(path, "temperature", i % 100, [])
    finally:
        done.set()
        reader.join()
    assert bad == [] and len(seen) > 10
    assert set(seen) <= set(range(100)) | {None}
    assert config_mod.load(path).controls.temperature == 99


# -- live, on the loopback -----------------------------------------------------------------


@pytest.fixture
def rig(model, model_pkg, tmp_path):
    made = []

    def make(text: str = RIG):
        path = tmp_path / "config.yaml"
        path.write_text(text)
        data = yaml.safe_load(text)
        cfg = make_config(model_pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1},
                          controls=data.get("controls") or {})
        lines: list[str] = []
        inport = LoopbackIn()
        live = Live(cfg, model, inport, LoopbackOut(), seed=4, log=lines.append)
        live.learner.save_to(path)
        live.start()
        made.append(live)
        return live, inport, lines, path

    yield make
    for live in made:
        live.stop()


def test_learn_a_cc_then_it_moves_the_control(rig):
    live, inport, lines, path = rig()
    live.post("learn", "temperature")
    wait_for(lambda: live.learner.waiting == ["temperature"])
    inport.deliver(cc(21, 0))
    wait_for(lambda: live.learner.saved == 1)
    assert live.engine.setting("answer.temperature") == 0.9  # the learning move did nothing
    inport.deliver(cc(21, 127))
    wait_for(lambda: live.engine.setting("answer.temperature") == 2.0)
    assert config_mod.load(path).controls.temperature == 21
    assert "learn: temperature is CC 21" in lines
    assert any(line.startswith("learn: saved controls.temperature: 21 in ") for line in lines)
    assert "# the left one" in path.read_text()


def test_learn_all_walks_through_the_controls(rig):
    live, inport, lines, path = rig("controls:\n  mute: 64\n")
    live.post("learn", "all")
    wait_for(lambda: live.learner.waiting == list(LEARN_ALL))
    inport.deliver(cc(20, 10))
    inport.deliver(cc(20, 11))  # the knob just learnt, still turning: not the next control
    inport.deliver(cc(123, 0))  # All Notes Off is never a control
    inport.deliver(cc(21, 5, channel=3))
    for i in range(2, len(LEARN_ALL)):
        inport.deliver(cc(20 + i, 0))
    wait_for(lambda: not live.learner.waiting and live.learner.saved == len(LEARN_ALL))
    want = {name: 20 + i for i, name in enumerate(LEARN_ALL)}
    assert live.controls.mapped == {c: n for n, c in want.items()}
    saved = config_mod.load(path).controls
    assert {n: getattr(saved, n) for n in LEARN_ALL} == want
    inport.deliver(cc(24, 127))  # mute's CC now
    wait_for(lambda: live.engine.muted)
    inport.deliver(cc(64, 0))  # its old one moves nothing now
    time.sleep(0.1)
    assert live.engine.muted


def test_learn_refuses_what_is_no_control(rig):
    live, inport, lines, path = rig()
    replies: list = []
    for name in ("state_out", "volume", 3, []):
        live.post("learn", name, replies.append)
    wait_for(lambda: len(replies) == 4)
    assert all(r.startswith("learn: expected a control to learn (temperature, ") for r in replies)
    assert live.learner.waiting == []


# -- over JACK -----------------------------------------------------------------------------


@pytest.mark.jack
@pytest.mark.parametrize("jack_server", [1024], indirect=True)
def test_learn_over_jack(jack_server, monkeypatch, model_pkg, tmp_path):
    from support import JACK_CALL as CALL
    from support import Companion, Performer

    for k, v in jack_server.items():
        if k.startswith("JACK"):
            monkeypatch.setenv(k, v)
    path = write_config(tmp_path / "config.yaml", model_pkg,
                        listen={"tempo_bpm": 120.0, "phrase_end_beats": 1.0},
                        answer={"length": 2, "max_beats": 2}, session={"enabled": False})
    text = "# my rig\n" + path.read_text() + RIG.split("# after controls")[0]
    path.write_text(text)
    comp = Companion(jack_server, "--config", str(path), "--learn", "mute")
    comp.wait_ready()
    performer = Performer()
    try:
        performer.to.send(cc(30, 3))
        wait_for(lambda: any("learn: saved controls.mute: 30" in line for line in comp.lines),
                 15)
        performer.to.send(cc(30, 127))
        wait_for(lambda: any("muted: listening only" in line for line in comp.lines), 15)
        performer.play(CALL)
        time.sleep(2.0)
    finally:
        performer.close()
        rc = comp.stop()
    assert rc == 0, "\n".join(comp.lines)
    assert not [m for _, m in performer.received() if m.type == "note_on"], "muted, yet answered"
    assert "learn: mute is CC 30 (no longer" not in "\n".join(comp.lines)
    after = path.read_text()
    assert changed_lines(text, after) == [("  mute: 64   # the left one",
                                           "  mute: 30  # the left one")]
    assert config_mod.load(Path(path)).controls.mute == 30
