"""Metrical position live: a format-2 step model fed the position of each note's onset
(companion.encoding.meter) on the beat grid the engine follows, format-1 packages as before,
and answers whose planned ending lands on a bar's first beat when the bar is known."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
from support import EngineRig, make_config

from companion.config import ConfigError
from companion.encoding import meter
from companion.engine.model import POSITION_CARD, ModelError, StepModel

TEMPO = 120.0
BEAT = 60.0 / TEMPO
# onsets at beats 0, 1, 1.5, 2, 3, 4.25: (pitch, start, duration)
CALL = [(62, 0, 0.9), (66, 1, 0.4), (69, 1.5, 0.4), (71, 2, 0.9), (69, 3, 0.9), (66, 4.25, 1.5)]


def build_tiny(pkg, vocab_from, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A format-2 package at ``pkg``: logits = a [V, V] table's row of the token plus a
    [SIZE, V] table's row of the position; h_out, c_out = h, c. Returns the two tables."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    pkg.mkdir(parents=True, exist_ok=True)
    vocab = json.loads((vocab_from / "vocab.json").read_text())
    (pkg / "vocab.json").write_text(json.dumps({**vocab, "format": 2}))
    v = len(vocab["curves"]) + len(vocab["specials"])
    rng = np.random.default_rng(seed)
    by_token = rng.normal(0, 1, (v, v)).astype(np.float32)
    by_position = rng.normal(0, 1, (meter.SIZE, v)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["by_token", "token"], ["lt"], axis=0),
         helper.make_node("Gather", ["by_position", "position"], ["lp"], axis=0),
         helper.make_node("Add", ["lt", "lp"], ["logits"]),
         helper.make_node("Identity", ["h"], ["h_out"]),
         helper.make_node("Identity", ["c"], ["c_out"])],
        "tiny_step",
        [helper.make_tensor_value_info("token", TensorProto.INT64, ["B"]),
         helper.make_tensor_value_info("position", TensorProto.INT64, ["B"]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, "B", 4]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, "B", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", v]),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, "B", 4]),
         helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [1, "B", 4])],
        [numpy_helper.from_array(by_token, "by_token"),
         numpy_helper.from_array(by_position, "by_position")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(pkg / "model.onnx"))
    (pkg / "card.json").write_text(json.dumps({"format": 2, "position": POSITION_CARD}))
    return by_token, by_position


@pytest.fixture(scope="module")
def format1(tmp_path_factory, model_pkg) -> Path:
    """A package of format 1 (a step of tokens alone, as every package was before format 2):
    the test package's vocabulary, random weights, a card without "format"."""
    from companion.encoding.curves import Vocabulary
    from train.export import StepWeights, write_package

    pkg = tmp_path_factory.mktemp("format1") / "old"
    pkg.mkdir()
    vocab = Vocabulary.load(model_pkg / "vocab.json")
    write_package(StepWeights.random(vocab.size, seed=4, position_embed=0), vocab, pkg)
    (pkg / "card.json").write_text(json.dumps({"corpora": ["music21:oneills1850"]}))
    return pkg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, model_pkg):
    pkg = tmp_path_factory.mktemp("tiny") / "tiny"
    tables = build_tiny(pkg, model_pkg)
    return pkg, tables


class Recording(StepModel):
    """A step model that notes each (token, position) it is fed."""

    def __init__(self, package, threads: int = 1):
        super().__init__(package, threads)
        self.fed: list[tuple[int, int | None]] = []

    def step(self, token, state, position=None):
        self.fed.append((int(token), position))
        return super().step(token, state, position)


def cfg(pkg, meter_beats=None, **answer):
    return make_config(pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1.5},
                       answer={"length": 8, "min_beats": 8, **answer},
                       time={"meter": meter_beats})


# -- the step model ------------------------------------------------------------------------


def test_a_format_2_package_takes_the_position_as_its_table_says(tiny):
    pkg, (by_token, by_position) = tiny
    m = StepModel(pkg)
    assert m.positional and m.format == 2
    st = m.zero_state()
    for tok, pos in ((0, 0), (0, 50), (5, 107), (5, 18)):
        np.testing.assert_allclose(m.step(tok, st, pos), by_token[tok] + by_position[pos],
                                   rtol=1e-6)
    assert not np.allclose(m.step(1, st, 0), m.step(1, st, 12))
    # no position: bar unknown, on the beat
    np.testing.assert_allclose(m.step(2, st), by_token[2] + by_position[meter.UNKNOWN_BAR * 12])
    with pytest.raises(ValueError, match="position: expected 0..107, got 108"):
        m.step(2, st, meter.SIZE)
    h = np.zeros((1, 3, 4), np.float32)
    logits, _, _ = m.run_batch(np.array([0, 1, 2]), h, h.copy(), np.array([3, 40, 100]))
    np.testing.assert_allclose(logits, by_token[[0, 1, 2]] + by_position[[3, 40, 100]],
                               rtol=1e-6)
    logits, _, _ = m.run_batch(np.array([4]), h[:, :1], h[:, :1].copy())
    np.testing.assert_allclose(logits[0], by_token[4] + by_position[96], rtol=1e-6)


def test_a_format_1_package_ignores_positions_and_steps_bos_at_once(format1):
    m = Recording(format1)
    assert not m.positional and m.format == 1
    a, b = m.zero_state(), m.zero_state()
    np.testing.assert_array_equal(m.step(3, a, 0), m.step(3, b, 77))
    np.testing.assert_array_equal(a.h, b.h)
    m.fed.clear()
    rig = EngineRig(m, cfg(format1, 4))
    assert rig.engine.steps == 1 and m.fed == [(m.vocab.bos, None)]  # bos at reset
    rig.play(CALL)
    _, answer = rig.finish()
    assert answer is not None and answer.notes
    assert all(pos is None for _, pos in m.fed)  # never a position, meter or not
    assert len(m.fed) == 1 + len(CALL) - 1 + len(answer.notes)


@pytest.mark.parametrize("card,why", [
    ({"format": 1}, '"format": 1, but model.onnx takes a position input (expected format 2)'),
    ({"format": 2, "position": {"phases": 24, "bar_quarters": 8, "size": 216}},
     '"position": expected {"phases": 12, "bar_quarters": 8, "size": 108}'),
])
def test_a_card_that_disagrees_with_a_format_2_model_is_one_clear_error(tmp_path, tiny, card,
                                                                        why):
    pkg = tmp_path / "bad"
    shutil.copytree(tiny[0], pkg)
    (pkg / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError) as e:
        StepModel(pkg)
    assert str(e.value).startswith(f"{pkg / 'card.json'}: {why}")
    assert "\n" not in str(e.value)


def test_a_format_2_card_on_a_model_without_position_is_one_clear_error(tmp_path, format1):
    pkg = tmp_path / "old"
    shutil.copytree(format1, pkg)
    card = json.loads((pkg / "card.json").read_text())
    (pkg / "card.json").write_text(json.dumps(card | {"format": 2, "position": POSITION_CARD}))
    with pytest.raises(ModelError, match=r'card.json: "format": 2, but model.onnx has no '
                                         r'position input \(expected format 1\)$'):
        StepModel(pkg)


@pytest.mark.parametrize("which, says", [("tiny", 1), ("format1", 2)])
def test_a_vocab_format_that_disagrees_with_the_model_is_one_clear_error(tmp_path, tiny,
                                                                          format1, which, says):
    """vocab.json's "format" (what a reader learns the model's inputs from) is checked."""
    pkg = tmp_path / "bad"
    shutil.copytree(tiny[0] if which == "tiny" else format1, pkg)
    vocab = json.loads((pkg / "vocab.json").read_text())
    (pkg / "vocab.json").write_text(json.dumps({**vocab, "format": says}))
    with pytest.raises(ModelError) as e:
        StepModel(pkg)
    assert str(e.value).startswith(f"{pkg / 'vocab.json'}: \"format\": {says}, but model.onnx")
    assert "\n" not in str(e.value)


# -- the engine ----------------------------------------------------------------------------


def played(rig, notes=CALL, t0=0.0):
    rig.play(notes, t0)
    return rig.finish()[1]


def answer_positions(answer, origin_s: float, bar: float | None) -> list[int]:
    """The position of each answer note's onset, ``origin_s`` the grid's beat 0 (a downbeat
    when ``bar`` is given): phases of 1/12 beat, quarters of the bar, 8 for unknown."""
    out = []
    for n in answer.notes:
        steps = round(round((n.start - origin_s) / BEAT * 24) / 2)  # 1/24 grid, half to even
        if bar is None:
            out.append(96 + steps % 12)
        else:
            q, ph = divmod(steps % round(bar * 12), 12)
            out.append(min(q, 7) * 12 + ph)
    return out


@pytest.mark.parametrize("meter_beats,call_positions", [
    (None, [96, 96, 102, 96, 96, 99]),  # the phase in the beat only
    (3, [0, 12, 18, 24, 0, 15]),  # 3/4 from the call's first onset
    (4, [0, 12, 18, 24, 36, 3]),
])
def test_the_engine_feeds_each_step_its_onsets_position(tiny, meter_beats, call_positions):
    m = Recording(tiny[0])
    rig = EngineRig(m, cfg(tiny[0], meter_beats))
    assert rig.engine.steps == 0 and m.fed == []  # bos waits for the first note's position
    rig.play(CALL, t0=0.75)  # the call's own grid starts at its first onset
    assert [pos for _, pos in m.fed] == call_positions
    assert m.fed[0][0] == m.vocab.bos and rig.engine.steps == len(CALL)
    _, answer = rig.finish()
    fed = m.fed[len(CALL):]
    assert [tok for tok, _ in fed] == answer.tokens
    assert [pos for _, pos in fed] == answer_positions(answer, 0.75, meter_beats)


def test_with_the_meter_known_the_ending_lands_on_a_bars_first_beat(tiny):
    for seed in range(12):
        for bar in (3, 4):
            rig = EngineRig(StepModel(tiny[0]), cfg(tiny[0], bar, cadence=1.0), seed)
            answer = played(rig)
            first = round(answer.start / BEAT)  # beats from the call's first onset
            # the last bar line at least a beat before the end, after the first onset
            want = max(e for e in range(1, math.floor(answer.beats - 1) + 1)
                       if (first + e) % bar == 0)
            last = answer.notes[-1]
            assert (last.start - answer.start) / BEAT == pytest.approx(want), (seed, bar)
            assert last.duration >= BEAT - 1e-9  # held at least a beat
            assert all(n.start <= last.start for n in answer.notes)


def test_without_a_meter_the_ending_is_on_the_last_whole_beat_as_before(tiny):
    for seed in range(6):
        answer = played(EngineRig(StepModel(tiny[0]), cfg(tiny[0], None, cadence=1.0), seed))
        at = (answer.notes[-1].start - answer.start) / BEAT
        assert at == pytest.approx(math.floor(answer.beats - 1.0))


def test_without_cadence_the_meter_changes_no_ending(tiny):
    answer = played(EngineRig(StepModel(tiny[0]), cfg(tiny[0], 3, cadence=0.0), 5))
    onset = (answer.notes[-1].start - answer.start) / BEAT
    assert onset < answer.beats and answer.notes[-1].end > answer.start


def clocked(rig, start: bool, first_beat: float, notes=CALL, upto_beats: float = 24.0) -> None:
    """A MIDI clock at TEMPO from t = 0 (a Start first if ``start``), ticking through
    ``upto_beats``, and ``notes`` played from clock beat ``first_beat``: all in time order."""
    events = [(0.0, 0, mido.Message("start"))] if start else []
    tick = BEAT / 24
    events += [(i * tick, 1, mido.Message("clock")) for i in range(int(upto_beats * 24))]
    for p, s, d in notes:
        events.append(((first_beat + s) * BEAT, 2, mido.Message("note_on", note=p, velocity=80)))
        events.append(((first_beat + s + d) * BEAT, 2, mido.Message("note_off", note=p)))
    for t, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        rig.feed(t, msg)


def test_on_a_midi_clock_bars_count_from_its_start(tiny):
    m = Recording(tiny[0])
    rig = EngineRig(m, cfg(tiny[0], 4))
    clocked(rig, True, 5.5)  # the call starts half a beat into the second bar
    # onsets at clock beats 5.5, 6.5, 7, 7.5, 8.5, 9.75
    assert [pos for _, pos in m.fed[:len(CALL)]] == [18, 30, 36, 42, 6, 21]
    answer = rig.engine.answer
    assert answer is not None and answer.notes
    fed = m.fed[len(CALL):len(CALL) + len(answer.notes)]
    assert [pos for _, pos in fed] == answer_positions(answer, 0.0, 4)
    last = (answer.notes[-1].start / BEAT) % 4  # cadence 1 (the default): on a downbeat
    assert min(last, 4 - last) == pytest.approx(0.0, abs=1e-6)


def test_on_a_midi_clock_without_start_the_calls_first_beat_is_a_downbeat(tiny):
    m = Recording(tiny[0])
    rig = EngineRig(m, cfg(tiny[0], 3))
    clocked(rig, False, 2.02)  # 10 ms late on the clock's third beat
    assert [pos for _, pos in m.fed[:len(CALL)]] == [0, 12, 18, 24, 0, 15]


class Session:
    """A Link session on the virtual clock: beat 0 at ``t0``, ``quantum`` beats to a bar."""

    def __init__(self, t0: float, quantum: float) -> None:
        self.t0, self.quantum = t0, quantum

    def present(self, t: float) -> bool:
        return True

    def stopped(self, t: float) -> bool:
        return False

    def beat_s(self, t: float) -> float:
        return BEAT

    def beats_at(self, t: float) -> float:
        return (t - self.t0) / BEAT

    def _next(self, t: float, every: float) -> float:
        return self.t0 + math.ceil(self.beats_at(t) / every - 1e-9) * every * BEAT

    def next_beat(self, t: float) -> float:
        return self._next(t, 1.0)

    def next_bar(self, t: float) -> float:
        return self._next(t, self.quantum)

    def propose(self, bpm: float) -> None:
        pass

    def describe(self, t: float) -> str:
        return ""


def test_on_a_link_session_the_bar_is_its_quantum(tiny):
    m = Recording(tiny[0])
    rig = EngineRig(m, cfg(tiny[0], None))  # no meter: Link's bar all the same
    rig.engine.use_link(Session(-1.0 * BEAT, 3))  # session beat 1 at t = 0
    answer = played(rig)
    # onsets at session beats 1, 2, 2.5, 3, 4, 5.25, bars of 3
    assert [pos for _, pos in m.fed[:len(CALL)]] == [12, 24, 30, 0, 12, 27]
    fed = m.fed[len(CALL):len(CALL) + len(answer.notes)]
    assert [pos for _, pos in fed] == answer_positions(answer, -1.0 * BEAT, 3)
    assert round(answer.start / BEAT + 1) % 3 == 0  # the answer starts on a bar line


def test_meter_is_a_live_setting_checked_as_in_the_file(tiny):
    rig = EngineRig(StepModel(tiny[0]), cfg(tiny[0], None))
    e = rig.engine
    assert e.setting("time.meter") is None and "time.meter" in e.settings()
    assert e.set("time.meter", 3) == 3
    with pytest.raises(ConfigError, match=r"^time.meter: expected a number in 1..8, got 9$"):
        e.set("time.meter", 9)
    with pytest.raises(ConfigError, match=r"^time.meter: expected a whole number, got 2.5$"):
        e.set("time.meter", 2.5)
    assert e.setting("time.meter") == 3
    m = Recording(tiny[0])
    rig = EngineRig(m, cfg(tiny[0], None))
    rig.engine.set("time.meter", 3)
    rig.play(CALL)
    assert [pos for _, pos in m.fed] == [0, 12, 18, 24, 0, 15]
    assert rig.engine.set("time.meter", None) is None
