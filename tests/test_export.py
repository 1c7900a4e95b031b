"""The ONNX step graph: the LSTM equations, the signature of docs/interface.md, atomic writes."""

import numpy as np
import pytest

from companion.encoding.curves import Vocabulary
from companion.engine.model import StepModel
from train.export import StepWeights, read_step, write_package, write_step


def reference_step(w: StepWeights, tok: int, h: np.ndarray, c: np.ndarray, pos: int = 0):
    """The Keras LSTM equations in numpy (gates i, f, candidate, o), the input the token's
    embedding then the position's (format 2)."""
    def sig(z):
        return 1 / (1 + np.exp(-z))

    x = w.embedding[tok].astype(np.float64)
    if w.position_embedding is not None:
        x = np.concatenate([x, w.position_embedding[pos]])
    hs, cs = [], []
    for i, (k, r, b) in enumerate(w.lstm):
        z = x @ k + h[i] @ r + b
        n = r.shape[0]
        ig, fg, gg, og = sig(z[:n]), sig(z[n:2 * n]), np.tanh(z[2 * n:3 * n]), sig(z[3 * n:])
        cn = fg * c[i] + ig * gg
        hn = og * np.tanh(cn)
        hs.append(hn)
        cs.append(cn)
        x = hn
    return x @ w.dense_kernel + w.dense_bias, np.array(hs), np.array(cs)


@pytest.fixture
def package(tmp_path):
    vocab = Vocabulary(np.array([[-2, 0.5], [0, 1.0], [2, 0.5], [7, 1.5]]))
    w = StepWeights.random(vocab.size, embed=8, units=16, layers=3, seed=5)
    write_package(w, vocab, tmp_path)
    return tmp_path, w


def test_step_follows_the_lstm_equations_with_explicit_state(package):
    path, w = package
    m = StepModel(path)
    state = m.zero_state()
    h = np.zeros((3, 16))
    c = np.zeros((3, 16))
    for tok, pos in zip([4, 0, 2, 2, 3, 1, 0], [0, 12, 30, 96, 101, 7, 24], strict=True):
        logits = m.step(tok, state, pos)
        ref, h, c = reference_step(w, tok, h, c, pos)
        assert np.abs(logits - ref).max() < 1e-5
        assert np.abs(state.h[:, 0] - h).max() < 1e-5 and np.abs(state.c[:, 0] - c).max() < 1e-5


def test_batched_step_equals_single_steps(package):
    path, _ = package
    m = StepModel(path)
    toks = np.array([0, 3, 4])
    h = np.random.default_rng(0).normal(size=(3, 3, 16)).astype(np.float32)
    c = np.random.default_rng(1).normal(size=(3, 3, 16)).astype(np.float32)
    pos = np.array([0, 50, 99])
    logits, hb, _ = m.run_batch(toks, h, c, pos)
    for b, t in enumerate(toks):
        one, h1, _ = m.run_batch(np.array([t]), h[:, b:b + 1].copy(), c[:, b:b + 1].copy(),
                                 pos[b:b + 1])
        assert np.abs(one[0] - logits[b]).max() < 1e-5
        assert np.abs(h1[:, 0] - hb[:, b]).max() < 1e-5


def test_weights_read_back_from_onnx(package):
    path, w = package
    r = read_step(path / "model.onnx")
    assert np.array_equal(r.embedding, w.embedding)
    assert np.array_equal(r.position_embedding, w.position_embedding)
    assert np.array_equal(r.dense_kernel, w.dense_kernel)
    for a, b in zip(r.lstm, w.lstm, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_failed_export_leaves_the_previous_model(package, monkeypatch):
    """A write that fails half-way (disk full, killed) leaves the old file and no temp file."""
    import os

    path, _ = package
    before = (path / "model.onnx").read_bytes()

    def disk_full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        write_step(StepWeights.random(5, embed=8, units=16, seed=9), path / "model.onnx")
    assert (path / "model.onnx").read_bytes() == before
    assert sorted(p.name for p in path.iterdir()) == ["model.onnx", "vocab.json"]
