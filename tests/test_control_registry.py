"""The registry of live controls (companion.live_controls): every control it lists goes through
each path derived from it: a config file setting it, a mapped CC moving it as its mapping
says, its OSC address, MIDI learn (learnt, then the CC moves it), the page's description,
and `--learn`. A Live that is not started, driven on this thread."""

from __future__ import annotations

import dataclasses

import mido
import pytest
import yaml
from support import make_config

from companion import config as config_mod
from companion.commands import live as live_mod
from companion.commands.cli import main
from companion.config import ConfigError, check_of
from companion.engine import engine as engine_mod
from companion.live_controls import (
    ACTIONS,
    CC_CONTROLS,
    CONTROLS,
    LEARN_ALL,
    LIVE_SETTINGS,
    SHORT_NAMES,
    Control,
    stops,
)
from companion.midi.loopback import LoopbackIn, LoopbackOut
from companion.realtime.controls import ON
from companion.realtime.live import Live
from companion.realtime.osc import command
from companion.ui.server import describe_settings

SETTINGS = [c for c in CONTROLS if c.kind == "setting"]
CC_ABLE = [c for c in CONTROLS if c.cc is not None]
#: The CC each CC-able control is mapped to in the config, and the one it learns.
MAPPED = {c.name: 20 + i for i, c in enumerate(CC_ABLE)}
LEARNT = {c.name: 90 + i for i, c in enumerate(CC_ABLE)}


def cc(control: int, value: int) -> mido.Message:
    return mido.Message("control_change", control=control, value=value)


def a_value(key: str):
    """A value the config check of ``key`` takes, not its default: a third of the way up its
    range (whole if it must be), or its last choice."""
    check = check_of(key)
    if check["kind"] == "choice":
        return check["choices"][-1]
    v = check["min"] + (check["max"] - check["min"]) / 3
    return round(v) if check["whole"] else v


@pytest.fixture
def rig(model, model_pkg, harmony_pkg):
    """A Live (not started) with every CC-able control mapped; the controls it applied."""
    cfg = make_config(model_pkg, controls={**MAPPED, "temperature_max": 3.0},
                      accompany={"model": str(harmony_pkg)})
    applied: list[tuple[str, object]] = []

    def event(kind, t, **data):
        if kind == "control":
            applied.append((data["name"], data["value"]))

    lv = Live(cfg, model, LoopbackIn(), LoopbackOut(), seed=1, on_event=event)
    return lv, applied


def test_the_registry_is_every_live_control():
    names = [c.name for c in CONTROLS]
    assert len(set(names)) == len(names) and len({c.key for c in CONTROLS}) == len(names)
    assert engine_mod.LIVE_SETTINGS == LIVE_SETTINGS == tuple(c.key for c in SETTINGS)
    assert set(SHORT_NAMES) == set(names)
    assert set(SHORT_NAMES.values()) == set(LIVE_SETTINGS) | set(ACTIONS) | {"model", "learn"}
    assert CC_CONTROLS == tuple(c.name for c in CC_ABLE)
    for c in CONTROLS:
        assert c.description and c.description.endswith("."), c.name
    for c in SETTINGS:
        check = check_of(c.key)  # a key of the config, checked by a range or choices
        assert (c.step is not None) == (check["kind"] == "range"), c.name
        assert c.cc is not None, f"{c.name}: every setting can be moved by a CC"
        if c.cc == "scale":
            assert check["kind"] == "range" and not check["whole"], c.name
        assert (c.cc == "choice") == (check["kind"] == "choice"), c.name
        if c.cc == "beats":  # its 0 is its word, or null where it has none
            config_mod.override(config_mod.Config(), c.key, check.get("word"))
        if isinstance(c.cc_top, int | float):  # a top within the range, above its bottom
            assert check["min"] < c.cc_top <= check["max"], c.name


def test_learn_all_walks_the_everyday_controls_as_before(rig):
    assert LEARN_ALL == ("temperature", "length", "style_weight", "key_strength", "mute",
                         "panic", "reset_style")
    assert set(LEARN_ALL) < set(CC_CONTROLS)
    lv, _ = rig
    lv.apply(*command("/companion/learn", ["all"]))
    assert lv.learner.waiting == list(LEARN_ALL)


def test_the_controls_section_has_a_cc_for_each_cc_control_only():
    keys = {f.name for f in dataclasses.fields(config_mod.ControlsConfig)}
    assert keys - {"channel", "temperature_max", "state_out"} == set(CC_CONTROLS)
    for c in CONTROLS:
        if c.cc is None:
            with pytest.raises(ConfigError, match=f"controls.{c.name}: unknown key"):
                make_config(None, controls={c.name: 1})


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: c.name)
def test_config(control: Control, tmp_path):
    """A config file setting it (and mapping a CC to it, where a CC can move it)."""
    data: dict = {}
    if control.kind == "setting":
        section, key = control.key.split(".")
        data[section] = {key: a_value(control.key)}
    if control.cc is not None:
        data.setdefault("controls", {})[control.name] = 33
    if not data:
        assert control.kind == "command"
        return
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = config_mod.load(path)
    if control.kind == "setting":
        section, key = control.key.split(".")
        assert getattr(getattr(cfg, section), key) == a_value(control.key)
    if control.cc is not None:
        assert getattr(cfg.controls, control.name) == 33


def top(lv: Live, control: Control) -> float:
    """The value a CC's 127 gives ``control``: its ``cc_top`` (a number, a ``controls:`` key,
    a live setting) or the top of its range."""
    if control.cc_top is None:
        return check_of(control.key)["max"]
    if isinstance(control.cc_top, int | float):
        return control.cc_top
    if control.cc_top.startswith("controls."):
        return getattr(lv.cfg.controls, control.cc_top.removeprefix("controls."))
    return lv.engine.setting(control.cc_top)


def expected(lv: Live, control: Control, v: int):
    """What CC value ``v`` sets ``control`` to, by its registry entry's mapping."""
    check = check_of(control.key)
    if control.cc == "choice":  # 128 values in equal shares, in the choices' order
        share = 128 / len(check["choices"])
        return next(ch for i, ch in enumerate(check["choices"]) if v < (i + 1) * share)
    if control.cc == "beats":
        return check.get("word") if v == 0 else float(max(1, round(v / 127 * top(lv, control))))
    value = check["min"] + v / 127 * (top(lv, control) - check["min"])
    return round(value) if control.cc == "whole" else value


def moves_as_mapped(lv: Live, applied: list, control: Control, number: int) -> None:
    """CC ``number`` moves ``control`` as its mapping says."""
    ctl = lv.controls
    if control.cc in ("scale", "whole", "beats", "choice"):
        for v in (0, 1, 63, 64, 100, 127):
            assert ctl.handle(cc(number, v))
            want = expected(lv, control, v)
            got = lv.engine.setting(control.key)
            assert got == (want if want is None or isinstance(want, str)
                           else pytest.approx(want)), (control.name, v)
        last = (check_of(control.key)["choices"][-1] if control.cc == "choice"
                else top(lv, control))
        assert lv.engine.setting(control.key) == (  # 127 reaches the top
            last if isinstance(last, str) else pytest.approx(last))
        if control.cc != "scale":  # every step (whole number, beat, choice) is reached
            reached = []
            for v in range(128):
                ctl.handle(cc(number, v))
                reached.append(lv.engine.setting(control.key))
            steps = sorted(set(reached), key=reached.index)
            if control.cc == "choice":
                assert steps == check_of(control.key)["choices"]
                counts = [reached.count(s) for s in steps]  # as even as 128 allows
                assert max(counts) - min(counts) <= 1, counts
            else:
                whole = [s for s in steps if isinstance(s, int | float)]
                assert whole == list(range(round(whole[0]), round(top(lv, control)) + 1))
    elif control.cc == "switch":
        for v, on in ((127, True), (ON, True), (ON - 1, False), (0, False)):
            applied.clear()
            assert ctl.handle(cc(number, v))
            assert applied == [(control.key, on)]
    else:  # a trigger: fires once per crossing of ON upwards
        applied.clear()
        for v in (127, 127, 0, ON - 1, ON, 0):
            assert ctl.handle(cc(number, v))
        assert applied == [(control.key, None)] * 2


@pytest.mark.parametrize("control", CC_ABLE, ids=lambda c: c.name)
def test_cc(control: Control, rig):
    lv, applied = rig
    moves_as_mapped(lv, applied, control, MAPPED[control.name])


@pytest.mark.parametrize("control", CC_ABLE, ids=lambda c: c.name)
def test_learn(control: Control, rig):
    lv, applied = rig
    lv.apply(*command("/companion/learn", [control.name]))  # as OSC (and the page) ask
    assert lv.learner.waiting == [control.name]
    number = LEARNT[control.name]
    assert lv.learner.heard(cc(number, 5))
    assert lv.controls.mapped.get(number) == control.name
    assert MAPPED[control.name] not in lv.controls.mapped  # its old CC is free
    moves_as_mapped(lv, applied, control, number)


@pytest.mark.parametrize("control", [c for c in CONTROLS if c.cc is None], ids=lambda c: c.name)
def test_no_learn_without_a_cc(control: Control, rig):
    lv, _ = rig
    with pytest.raises(ConfigError, match="learn: expected a control to learn"):
        lv.apply("learn", control.name)
    assert lv.learner.waiting == []


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: c.name)
def test_osc(control: Control, rig, model_pkg):
    """``/companion/NAME`` (and the setting's config key) reaches ``Live.apply`` and is
    applied."""
    lv, applied = rig
    value = {"setting": a_value(control.key) if control.kind == "setting" else None,
             "switch": 1.0, "trigger": None, "command": None}[control.kind]
    if control.name == "model":
        value = model_pkg.name
    elif control.name == "learn":
        value = CC_CONTROLS[0]
    addresses = [control.name] + ([control.key] if control.key != control.name else [])
    for address in addresses:
        args = [] if value is None else [value]
        name, v = command(f"/companion/{address}", args)
        assert name == control.key
        applied.clear()
        lv.apply(name, v)
        assert applied and applied[-1][0] == control.key
        if control.kind == "setting":
            assert lv.engine.setting(control.key) == pytest.approx(value)
        elif control.kind == "switch":
            assert lv.engine.muted
        elif control.name == "learn":
            assert lv.learner.waiting == [CC_CONTROLS[0]]
        elif control.name == "model":
            assert applied[-1][1] == model_pkg.name


def test_the_page_describes_every_control(rig):
    lv, _ = rig
    described = {d["name"]: d for d in describe_settings(lv.cfg, lv.engine.settings())}
    assert list(described) == [c.key for c in CONTROLS if c.kind != "command"]
    for c in CONTROLS:
        if c.kind == "command":
            continue
        d = described[c.key]
        assert (d["label"], d["description"]) == (c.label, c.description)
        assert d["cc"] == MAPPED.get(c.name)
        if c.kind == "setting":
            assert d["value"] == lv.engine.setting(c.key)
            assert (d["step"], d["unit"], d["scale"], d["none"]) == (c.step, c.unit, c.scale,
                                                                       c.none)
            if d["kind"] == "range":
                assert d["stops"] == stops(c, check_of(c.key))
            assert {k: d[k] for k in check_of(c.key)} == check_of(c.key)
        else:
            assert d["kind"] == ("switch" if c.kind == "switch" else "action")


def test_learn_option_names_every_cc_control(capsys, monkeypatch, model_pkg):
    with pytest.raises(SystemExit):
        main(["live", "--help"])
    assert f"({', '.join(CC_CONTROLS)}; all: {', '.join(LEARN_ALL)}, in turn)" in " ".join(
        capsys.readouterr().out.split())
    asked: list = []
    monkeypatch.setattr(live_mod, "run", lambda cfg, **kw: asked.append(kw["learn"]) or 0)
    for name in (*CC_CONTROLS, "all"):
        assert main(["live", "--model", str(model_pkg), "--learn", name]) == 0
    assert asked == [[name] for name in (*CC_CONTROLS, "all")]
    for c in CONTROLS:
        if c.cc is None:
            assert main(["live", "--learn", c.name]) == 2
            assert f"--learn: expected one of {', '.join(CC_CONTROLS)}" in capsys.readouterr().err


def test_the_page_sliders_stop_where_a_performer_wants():
    """The page's stops (live_controls.stops): each one a value the config takes, in order;
    whole beats for the answer's lengths (the shortest answer can be 2), a log scale where a
    range spans decades (16 of the longest answer's 1..256 beats is not at 6% of the
    slider), the meter back to unknown (null), the length to "call"."""
    by_name = {c.name: c for c in CONTROLS}
    for c in SETTINGS:
        check = check_of(c.key)
        if check["kind"] != "range":
            continue
        st = stops(c, check)
        for v in st:  # each one a value the config takes
            config_mod.override(config_mod.Config(), c.key, v)
        numbers = [v for v in st if isinstance(v, int | float)]
        assert numbers == sorted(set(numbers)) and numbers[0] >= check["min"], c.name
        assert numbers[-1] == check["max"], c.name
        assert all(abs(v / c.step - round(v / c.step)) < 1e-6 for v in numbers), c.name
        if c.unit == "beats" and check["max"] / max(check["min"], c.step) >= 100:
            assert c.scale == "log", c.name
        assert len(st) <= 201, c.name  # a finger can reach each one
    for name in ("length", "min_beats", "max_beats"):
        c = by_name[name]
        assert all(float(v).is_integer() for v in stops(c, check_of(c.key))
                   if isinstance(v, int | float)), name
    assert 2 in stops(by_name["min_beats"], check_of("answer.min_beats"))
    st = stops(by_name["max_beats"], check_of("answer.max_beats"))
    assert 0.3 < st.index(16) / (len(st) - 1) < 0.6
    assert stops(by_name["meter"], check_of("time.meter"))[0] is None
    assert stops(by_name["length"], check_of("answer.length"))[0] == "call"
    for c in CONTROLS:  # a performer's label, not a config key
        assert "_" not in c.label and "." not in c.label, c.name
