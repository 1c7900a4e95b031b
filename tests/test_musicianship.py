"""Key, range, style and repeat guard in the engine, and the musicianship goals measured on
held-out calls (Nottingham tunes; the default model trained on other corpora)."""

from __future__ import annotations

import numpy as np
import pytest
from support import ENGINE_CALL as CALL
from support import ROOT, EngineRig, make_config, touch

from bench.musicianship import GOAL_IN_KEY, degenerate, held_out_calls, measure
from companion.encoding.key import in_scale
from companion.encoding.names import parse_key
from companion.engine.model import StepModel

TEMPO = 120.0
# a G major call: G A B D C B A G, then a D major one
G_CALL = [(67, 0, 0.5), (69, 0.5, 0.5), (71, 1, 0.5), (74, 1.5, 0.5), (72, 2, 0.5),
          (71, 2.5, 0.5), (69, 3, 0.5), (67, 3.5, 1.0)]


def cfg(model_pkg, answer=None, **sections):
    return make_config(model_pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1.5},
                       answer={"length": 8, "min_beats": 8, "max_beats": 8,
                               "temperature": 1.5, "top_p": 1.0, **(answer or {})},
                       **sections)


def answer_of(model, c, call, seed):
    rig = EngineRig(model, c, seed)
    rig.play(call, velocity=touch)
    _, a = rig.finish()
    return rig.engine, a


def test_key_strength_one_keeps_answers_on_the_scale(model, model_pkg):
    for seed in range(6):
        engine, a = answer_of(model, cfg(model_pkg, key={"strength": 1.0}), G_CALL, seed)
        assert engine.key == parse_key("G major")
        assert engine.key_name() == "G major"
        assert in_scale([n.pitch for n in a.notes], *engine.key).all()


def test_key_strength_zero_is_the_raw_model(model, model_pkg):
    def pitches(**key):
        _, a = answer_of(model, cfg(model_pkg, key=key, style={"weight": 0}), G_CALL, 3)
        return [n.pitch for n in a.notes]

    raw = pitches(strength=0.0)
    assert raw == pitches(strength=0.0, fixed="C# major")  # no bias whatever the key
    off = sum(not in_scale([p], 7, 0)[0] for seed in range(8)
              for p in [n.pitch for n in answer_of(model, cfg(
                  model_pkg, key={"strength": 0.0}), G_CALL, seed)[1].notes])
    assert off > 0  # the random-weight model leaves the scale when left alone


def test_fixed_key_overrides_the_estimate(model, model_pkg):
    engine, a = answer_of(model, cfg(model_pkg, key={"fixed": "Eb major", "strength": 1.0}),
                          G_CALL, 1)
    assert engine.key == (3, 0)
    assert in_scale([n.pitch for n in a.notes], 3, 0).all()


def test_absolute_range(model, model_pkg):
    for seed in range(4):  # a bass part: the call's range widened, cut to 40..60
        _, a = answer_of(model, cfg(model_pkg, range={"lowest": 40, "highest": 60},
                                    answer={"range_widen": 24}), [(48, 0, 1), (55, 1, 1)], seed)
        assert all(40 <= n.pitch <= 60 for n in a.notes)
    # a call above the part's range: answered within the part's range after the first leaps
    _, a = answer_of(model, cfg(model_pkg, range={"lowest": 30, "highest": 50}), G_CALL, 0)
    ps = [n.pitch for n in a.notes]
    assert ps[-1] <= 50 and all(b <= max(a_, 50) for a_, b in zip(ps, ps[1:], strict=False))


def test_repeat_guard(model, model_pkg):
    # at temperature 0 the argmax tends to repeat itself; the guard breaks the runs
    for k in (1, 2):
        for seed in range(3):
            _, a = answer_of(model, cfg(model_pkg, answer={"temperature": 0.0},
                                        style={"max_repeat": k, "weight": 0}), CALL, seed)
            t = a.tokens
            runs = [t[i:i + k + 1] for i in range(len(t) - k)]
            assert not any(len(set(r)) == 1 for r in runs), t
    assert degenerate([5, 5, 5]) and not degenerate([5, 5]) and not degenerate([5, 5, 6])


def test_style_memory_picks_up_the_performers_curves(model, model_pkg):
    c = cfg(model_pkg, key={"strength": 0.0}, style={"weight": 1.0, "order": 3},
            answer={"temperature": 0.5, "range_widen": 24})
    rig = EngineRig(model, c, 2)
    t = rig.play(G_CALL, velocity=touch)
    _, a = rig.finish()
    learnt = set(rig.engine.style.contexts[()].counts)
    assert len(learnt) >= 4 and rig.engine.style.tokens_seen == len(G_CALL) - 1
    inside = [tok in learnt for tok in a.tokens[1:]]  # the first curve must fit the gap
    assert np.mean(inside) >= 0.8, (a.tokens, learnt)
    # weight 0: the same engine, the model's own curves
    c0 = cfg(model_pkg, key={"strength": 0.0}, style={"weight": 0.0},
             answer={"temperature": 0.5, "range_widen": 24})
    _, a0 = answer_of(model, c0, G_CALL, 2)
    assert np.mean([tok in learnt for tok in a0.tokens[1:]]) < np.mean(inside)
    assert t > 0


def test_mute_listens_and_learns_without_answering(model, model_pkg):
    rig = EngineRig(model, cfg(model_pkg), 1)
    rig.engine.set_muted(True)
    rig.play(G_CALL, velocity=touch)
    d = rig.engine.next_deadline()
    assert rig.poll(d) is None and rig.sent == []
    assert rig.engine.key == (7, 0) and not rig.engine.style.empty
    assert rig.engine.next_deadline() is None  # the phrase was taken: no busy loop


# -- the goals on held-out calls -------------------------------------------------------


def _package(model_pkg):
    default = ROOT / "models" / "default"
    return default if (default / "model.onnx").is_file() else model_pkg


@pytest.fixture(scope="module")
def calls(nottingham):
    return held_out_calls(60, folder=nottingham[0].parent)


def test_goals_on_held_out_calls(model_pkg, calls):
    pkg = _package(model_pkg)
    model = StepModel(pkg)
    c = make_config(pkg)  # the shipped defaults: key strength 0.9, style weight 0.3
    f = measure(c, model, calls, seed=0)
    print(f"\n{pkg}: {f}")
    assert f.calls == 60
    assert f.in_key_on >= GOAL_IN_KEY, f
    assert f.in_key_on > f.in_key_off
    assert f.degenerate_on == 0, f
    assert f.in_range_on == 1.0 and f.in_range_off == 1.0, f


@pytest.mark.parametrize("section,value,message", [
    ("key", {"fixed": "H major"}, "key.fixed: expected a key"),
    ("key", {"strength": 1.5}, "key.strength: expected a number in 0..1"),
    ("range", {"lowest": 70, "highest": 60}, "range.highest: expected at least range.lowest"),
    ("range", {"highest": 128}, "range.highest: expected a number in 0..127"),
    ("style", {"order": 0}, "style.order: expected a number in 1..8"),
    ("style", {"weight": -0.1}, "style.weight: expected a number in 0..1"),
    ("style", {"memory": 3}, "style.memory: expected a number in 16..65536"),
    ("style", {"memories": 3}, "style.memories: unknown key"),
])
def test_config_errors_name_the_key(section, value, message):
    from companion.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        make_config(None, **{section: value})
