"""Metrical positions on the training side: bars read from scores, positions beside the
tokens in windows and batches, bars hidden in training, and the format-2 ONNX step."""

import json

import numpy as np
import pytest
from support import tunes, write_tune

from companion.encoding import meter
from companion.encoding.curves import Vocabulary
from companion.encoding.melody import Melody, read_melodies
from companion.engine.model import StepModel
from train.dataset import BAR_HIDDEN, windows
from train.export import StepWeights, read_step, write_package

#: A pickup of one quarter in 3/4, two 3/4 bars, two 6/8 bars, a last 3/4 bar.
ABC = """X:1
T:Meter test
M:3/4
L:1/8
K:G
D2 | G2 A2 B2 | d4 B>c | [M:6/8] d2B cAF | G3 z3 | [M:3/4] G6 |]
"""


def test_bars_of_an_abc_tune_with_a_pickup_and_a_change_to_six_eight(tmp_path):
    (tmp_path / "t.abc").write_text(ABC)
    m = read_melodies(tmp_path / "t.abc")[0]
    assert m.onsets.tolist() == [0, 1, 2, 3, 4, 6, 6.75, 7, 8, 8.5, 9, 9.5, 10, 13]
    bar_onsets, bar_lengths = m.bars()
    # the pickup sits at the end of its bar; each bar counts from its first beat
    assert bar_onsets.tolist() == [2, 0, 1, 2, 0, 2, 2.75, 0, 1, 1.5, 2, 2.5, 0, 0]
    assert bar_lengths.tolist() == [3.0] * 14  # 3/4 and 6/8 are both 3 quarters
    assert m.positions().tolist() == [24, 0, 12, 24, 0, 24, 33, 0, 12, 18, 24, 30, 0, 0]


def test_a_midi_file_without_a_time_signature_has_no_bars(tmp_path):
    m = read_melodies(write_tune(tmp_path / "t.mid", 5))[0]
    bar_onsets, bar_lengths = m.bars()
    assert np.isnan(bar_onsets).all() and np.isnan(bar_lengths).all()
    assert (m.positions() // meter.PHASES == meter.UNKNOWN_BAR).all()
    assert m.positions().tolist() == meter.positions(m.onsets).tolist()


def test_a_melody_built_without_bars_has_them_unknown_with_the_phase_from_its_start():
    m = Melody("x", np.array([60, 62, 64]), np.array([0.0, 0.5, 1.25]), np.ones(3),
               np.full(3, 80))
    assert np.isnan(m.bars()[0]).all()
    u = meter.UNKNOWN_BAR * meter.PHASES
    assert m.positions().tolist() == [u, u + 6, u + 3]


def test_oneill_tunes_count_each_bar_from_its_first_beat_and_right_align_the_pickup():
    # two 6/8 jigs: a pickup of an eighth, and one of two sixteenths
    for m, pickup in ((tunes(5, 1)[0], [2.5]), (tunes(8, 1)[0], [2.5, 2.75])):
        bar_onsets, bar_lengths = m.bars()
        assert (bar_lengths == 3.0).all()
        assert (bar_onsets >= 0).all() and (bar_onsets < 3.0).all()
        assert bar_onsets[: len(pickup) + 1].tolist() == [*pickup, 0.0]
        # the first downbeat comes after the half-quarter pickup: every bar starts at 0.5 + 3k
        assert np.array_equal((m.onsets - bar_onsets) % 3.0, np.full(len(m), 0.5))


def test_windows_carry_positions_parallel_to_the_inputs():
    seqs = [np.arange(10, 20), np.array([30, 31, 32])]
    pos = [np.arange(100, 110), np.array([5, 6, 7])]
    x, y, w, p = windows(seqs, 4, pos)
    assert x.tolist()[:3] == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 0, 0, 0]]
    assert p.tolist() == [[100, 101, 102, 103], [104, 105, 106, 107], [108, 0, 0, 0],
                          [5, 6, 0, 0]]
    assert w.tolist()[-1] == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="parallel"):
        windows(seqs, 4, pos[:1])


@pytest.mark.tensorflow
def test_training_batches_hide_the_bar_of_some_windows_afresh_each_epoch_keeping_the_phase():
    from train.dataset import tf_dataset

    rng = np.random.default_rng(0)
    n = 400
    seqs = [np.concatenate([[i], rng.integers(0, 9, 19)]) for i in range(n)]  # token 0: its id
    pos = [rng.integers(0, meter.UNKNOWN_BAR * meter.PHASES, 20) for _ in range(n)]
    x, y, w, p = windows(seqs, 32, pos)
    ds = tf_dataset(x, y, w, 50, shuffle=True, seed=3, positions=p, bar_hidden=BAR_HIDDEN)

    def epoch() -> set[int]:
        hidden, seen = set(), 0
        for inputs, _, bw in ds:
            assert inputs["tokens"].shape == inputs["positions"].shape == bw.shape
            for tok, got in zip(inputs["tokens"].numpy(), inputs["positions"].numpy(),
                                strict=True):
                own = pos[tok[0]][: len(got)]
                seen += 1
                if (got == meter.hide_bar(own)).all():
                    hidden.add(int(tok[0]))
                else:
                    assert (got == own).all(), "a window's positions changed but not its bar"
        assert seen == n
        return hidden

    first, second = epoch(), epoch()
    assert 0.2 * n < len(first) < 0.4 * n and 0.2 * n < len(second) < 0.4 * n
    assert first != second  # drawn afresh


@pytest.fixture
def step_package(tmp_path):
    vocab = Vocabulary(np.array([[-2, 0.5], [0, 1.0], [2, 0.5], [7, 1.5]]))
    w = StepWeights.random(vocab.size, embed=8, units=16, layers=2, seed=5, position_embed=6)
    write_package(w, vocab, tmp_path)
    (tmp_path / "card.json").write_text(json.dumps(w.card()))
    return tmp_path, w


def test_format_two_step_takes_the_position_beside_the_token(step_package):
    path, w = step_package
    assert w.format == 2 and w.card() == {
        "format": 2, "position": {"phases": 12, "bar_quarters": 8, "size": 108}}
    m = StepModel(path)
    assert m.positional
    assert [i.name for i in m.session.get_inputs()] == ["token", "position", "h", "c"]
    at = {p: m.step(1, m.zero_state(), p) for p in (0, 6, meter.UNKNOWN_BAR * meter.PHASES)}
    assert np.abs(at[0] - at[6]).max() > 1e-3 and np.abs(at[0] - at[96]).max() > 1e-3
    # the position's embedding sits after the token's in the first layer's input
    x = np.concatenate([w.embedding[1], w.position_embedding[6]])
    k, r, b = w.lstm[0]
    z = x @ k + b
    gates = 1 / (1 + np.exp(-z))
    n = r.shape[0]
    c0 = gates[:n] * np.tanh(z[2 * n:3 * n])
    state = m.zero_state()
    m.step(1, state, 6)
    assert np.abs(state.c[0, 0] - c0).max() < 1e-5
    back = read_step(path / "model.onnx")
    assert np.array_equal(back.position_embedding, w.position_embedding)
    assert back.lstm[0][0].shape == (8 + 6, 4 * 16)


def test_format_one_step_without_position_embedding(tmp_path):
    vocab = Vocabulary(np.array([[0, 1.0], [2, 0.5]]))
    w = StepWeights.random(vocab.size, embed=8, units=16, seed=1, position_embed=0)
    write_package(w, vocab, tmp_path)
    assert w.format == 1 and w.card() == {}
    m = StepModel(tmp_path)
    assert not m.positional
    assert [i.name for i in m.session.get_inputs()] == ["token", "h", "c"]
    assert read_step(tmp_path / "model.onnx").position_embedding is None


def test_lstm_score_feeds_positions_and_they_change_the_figures(step_package):
    from train.evaluate import lstm_score

    path, _ = step_package
    m = StepModel(path)
    seqs = [np.array([4, 0, 1, 2, 3, 1]), np.array([4, 2, 2, 1])]
    pos = [np.array([0, 12, 24, 0, 12, 24]), np.array([30, 0, 6, 12])]
    one = [lstm_score(m, [s], positions=[p])["nll"] for s, p in zip(seqs, pos, strict=True)]
    both = lstm_score(m, seqs, positions=pos)
    assert both["nll"] == pytest.approx((one[0] * 5 + one[1] * 3) / 8, rel=1e-5)
    hidden = lstm_score(m, seqs, positions=[meter.hide_bar(p) for p in pos])
    assert hidden["nll"] != pytest.approx(both["nll"], rel=1e-6)
    with pytest.raises(ValueError, match="parallel"):
        lstm_score(m, seqs, positions=pos[:1])
