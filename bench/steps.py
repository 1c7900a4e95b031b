"""The model step three ways, in one process: ``step_us`` (the ONNX step the companion runs),
``tf_step_us`` (the same LSTM as a ``tf.function``) and ``keras_call_us`` (a Keras model
called eagerly on one token).

They run in interleaved rounds, so that a noisy neighbour slows all three alike and their
ratios hold. The TensorFlow side is built from the package's own weights (``read_step``):
it needs no training checkpoint, and TensorFlow is imported only here, only when installed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.figures import Plan, Result, log, stats

if TYPE_CHECKING:
    from companion.engine.model import StepModel


class _TfStep:
    """The same step in TensorFlow, from the package's weights: a ``tf.function`` over Keras
    LSTM cells with explicit state, and the naive form, a Keras model with state inputs and
    outputs called eagerly on one token."""

    def __init__(self, onnx_path: Path):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras
        import tensorflow as tf

        from companion.engine.model import DEFAULT_POSITION
        from train.export import read_step

        # one thread each, as the ONNX session has: the step is too small to share out
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        w = read_step(onnx_path)
        v, e = w.embedding.shape
        self.layers, self.units = len(w.lstm), w.units
        h_units = self.units
        # a format-2 step takes the position StepModel.step feeds when given none
        pe = w.position_embedding
        self.position = DEFAULT_POSITION

        emb = keras.layers.Embedding(v, e)
        emb.build((None,))
        emb.set_weights([w.embedding])
        pemb = None
        if pe is not None:
            pemb = keras.layers.Embedding(*pe.shape)
            pemb.build((None,))
            pemb.set_weights([pe])
        cells = []
        d = e + (0 if pe is None else pe.shape[1])
        for k, r, b in w.lstm:
            cell = keras.layers.LSTMCell(h_units)
            cell.build((None, d))
            cell.set_weights([k, r, b])
            cells.append(cell)
            d = h_units
        dense = keras.layers.Dense(v)
        dense.build((None, h_units))
        dense.set_weights([w.dense_kernel, w.dense_bias])

        @tf.function(reduce_retracing=True)
        def step(tok, h, c):
            x = emb(tok)
            if pemb is not None:
                x = tf.concat([x, pemb(tf.fill(tf.shape(tok), self.position))], axis=-1)
            hs, cs = [], []
            for i, cell in enumerate(cells):
                x, (hn, cn) = cell(x, [h[i], c[i]])
                hs.append(hn)
                cs.append(cn)
            return dense(x), tf.stack(hs), tf.stack(cs)

        self._tf = tf
        self._step = step
        self.h = tf.zeros((self.layers, 1, h_units))
        self.c = tf.zeros((self.layers, 1, h_units))

        tok_in = keras.Input(shape=(1,), dtype="int32", batch_size=1, name="token")
        state_in = [keras.Input(shape=(h_units,), batch_size=1, name=f"s{i}")
                    for i in range(2 * self.layers)]
        x = keras.layers.Embedding(v, e, name="embedding")(tok_in)
        pos_in = []
        if pe is not None:
            pos_in = [keras.Input(shape=(1,), dtype="int32", batch_size=1, name="position")]
            p = keras.layers.Embedding(*pe.shape, name="position_embedding")(pos_in[0])
            x = keras.layers.Concatenate()([x, p])
        state_out = []
        for i in range(self.layers):
            x, hn, cn = keras.layers.LSTM(
                h_units, return_sequences=True, return_state=True, name=f"lstm{i}"
            )(x, initial_state=[state_in[2 * i], state_in[2 * i + 1]])
            state_out += [hn, cn]
        logits = keras.layers.Dense(v, name="logits")(x)
        self.keras_model = keras.Model([tok_in, *pos_in, *state_in], [logits, *state_out])
        self.keras_model.get_layer("embedding").set_weights([w.embedding])
        if pe is not None:
            self.keras_model.get_layer("position_embedding").set_weights([pe])
        self._positions = [np.array([[self.position]], np.int32)] if pe is not None else []
        for i, (k, r, b) in enumerate(w.lstm):
            self.keras_model.get_layer(f"lstm{i}").set_weights([k, r, b])
        self.keras_model.get_layer("logits").set_weights([w.dense_kernel, w.dense_bias])
        self.states = [np.zeros((1, h_units), np.float32) for _ in range(2 * self.layers)]

    def tf_step(self, token: int) -> np.ndarray:
        tok = self._tf.constant([token], self._tf.int64)
        logits, self.h, self.c = self._step(tok, self.h, self.c)
        return logits

    def keras_call(self, token: int) -> np.ndarray:
        out = self.keras_model([np.array([[token]], np.int32), *self._positions, *self.states])
        self.states = [np.asarray(s) for s in out[1:]]
        return np.asarray(out[0])

    def check(self, model: StepModel, tokens: list[int]) -> float:
        """Max |logit difference| of both TensorFlow forms against the ONNX step."""
        state = model.zero_state()
        worst = 0.0
        for t in tokens:
            ref = model.step(t, state)
            a = np.asarray(self.tf_step(t))[0]
            b = self.keras_call(t)[0, 0]
            worst = max(worst, float(np.abs(a - ref).max()), float(np.abs(b - ref).max()))
        return worst


def _timed(fn: Callable[[int], object], tokens: np.ndarray, out: list[float]) -> None:
    """Time each call of ``fn`` on its own, in microseconds."""
    clock = time.perf_counter_ns
    for t in tokens:
        t0 = clock()
        fn(t)
        out.append((clock() - t0) / 1000.0)


def measure_steps(model_dir: Path, plan: Plan, res: Result, quiet: bool) -> None:
    """``step_us``, ``tf_step_us``, ``keras_call_us``: interleaved rounds in one process."""
    from companion.engine.model import StepModel

    model = StepModel(model_dir)
    state = model.zero_state()
    rng = np.random.default_rng(0)
    v = model.vocab_size

    def onnx_step(t: int) -> object:
        return model.step(t, state)

    tfs = None
    why_not = "TensorFlow is not installed"
    try:
        import importlib.util

        if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("keras"):
            log("bench: building the TensorFlow step from the package's weights", quiet)
            tfs = _TfStep(model_dir / "model.onnx")
            diff = tfs.check(model, [int(t) for t in rng.integers(0, v, 8)])
            if diff > 1e-3:
                why_not = f"the TensorFlow step differs from ONNX by {diff:.1e}"
                tfs = None
    except Exception as e:  # a broken TensorFlow install must not cost the other figures
        why_not = f"TensorFlow step failed: {type(e).__name__}: {e}"[:200]
        tfs = None

    onnx_us: list[float] = []
    tf_us: list[float] = []
    keras_us: list[float] = []
    # warm-up: first calls trace, allocate and fill caches
    _timed(onnx_step, rng.integers(0, v, 200), [])
    if tfs is not None:
        _timed(tfs.tf_step, rng.integers(0, v, 20), [])
        _timed(tfs.keras_call, rng.integers(0, v, 3), [])
    log(f"bench: model step, {plan.rounds} interleaved rounds", quiet)
    for _ in range(plan.rounds):
        # each round starts with a few untimed calls: the other two evicted the caches
        _timed(onnx_step, rng.integers(0, v, 20), [])
        _timed(onnx_step, rng.integers(0, v, plan.onnx_per_round), onnx_us)
        if tfs is not None:
            _timed(tfs.tf_step, rng.integers(0, v, 5), [])
            _timed(tfs.tf_step, rng.integers(0, v, plan.tf_per_round), tf_us)
            _timed(tfs.keras_call, rng.integers(0, v, 1), [])
            _timed(tfs.keras_call, rng.integers(0, v, plan.keras_per_round), keras_us)
    # Live, a step follows tens of ms without one: the weights have left the caches.
    idle_us: list[float] = []
    for t in rng.integers(0, v, plan.idle_steps):
        time.sleep(0.05)
        _timed(onnx_step, [t], idle_us)
    rounds = f"{plan.rounds} interleaved rounds"
    res.set("step_us", stats(onnx_us, digits=1),
            f"{len(onnx_us)} steps back to back ({rounds}, {model.layers}x{model.units} LSTM, "
            f"V={v}); a step after 50 ms without one, as between notes: p50 "
            f"{np.median(idle_us):.0f} us ({len(idle_us)} steps)")
    if tfs is None:
        res.set("tf_step_us", None, why_not)
        res.set("keras_call_us", None, why_not)
    else:
        res.set("tf_step_us", stats(tf_us, ("p50",), 1), f"{len(tf_us)} steps ({rounds})")
        res.set("keras_call_us", stats(keras_us, ("p50",), 1), f"{len(keras_us)} calls ({rounds})")

