"""One LSTM step as an ONNX graph, with the state as explicit inputs and outputs.

The graph is written op by op from the Keras weights rather than converted: the
live model must be exactly `token, position, h, c -> logits, h_out, c_out` (format 2; a
model without a position embedding: `token, h, c`, format 1; docs/interface.md), and a
converter would export the whole sequence loop with its state hidden inside.
The LSTM's input is the token's embedding, then the position's (model.py's Concatenate).
Keras gate order is i, f, c (candidate), o; one MatMul per layer over [x, h].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from companion.encoding import meter
from companion.encoding.curves import Vocabulary, write_atomic

OPSET = 17


@dataclass
class StepWeights:
    """Weights of Embedding (and position Embedding) -> LSTM x L -> Dense, as numpy arrays
    in Keras layout."""

    embedding: np.ndarray  # [V, E]
    #: per layer: kernel [in, 4H], recurrent kernel [H, 4H], bias [4H]
    lstm: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    dense_kernel: np.ndarray  # [H, V]
    dense_bias: np.ndarray  # [V]
    position_embedding: np.ndarray | None = None  # [meter.SIZE, P]; None: format 1

    @property
    def units(self) -> int:
        return self.lstm[0][1].shape[0]

    @property
    def format(self) -> int:
        """The package format of the step: 2 with a position input, else 1."""
        return meter.FORMAT if self.position_embedding is not None else 1

    def card(self) -> dict:
        """What card.json says of the step's inputs: its format and the position's grid
        (none for format 1)."""
        from companion.engine.model import POSITION_CARD

        if self.position_embedding is None:
            return {}
        return {"format": meter.FORMAT, "position": dict(POSITION_CARD)}

    @classmethod
    def random(
        cls, vocab_size: int, embed: int = 16, units: int = 32, layers: int = 2, seed: int = 0,
        position_embed: int = 16,
    ) -> StepWeights:
        """Small random weights: test packages without TensorFlow (``position_embed`` 0:
        format 1, no position input)."""
        rng = np.random.default_rng(seed)
        lstm = []
        d_in = embed + position_embed
        for _ in range(layers):
            lstm.append(
                (
                    rng.normal(0, 0.3, (d_in, 4 * units)).astype(np.float32),
                    rng.normal(0, 0.3, (units, 4 * units)).astype(np.float32),
                    rng.normal(0, 0.1, (4 * units,)).astype(np.float32),
                )
            )
            d_in = units
        return cls(
            embedding=rng.normal(0, 1, (vocab_size, embed)).astype(np.float32),
            lstm=lstm,
            dense_kernel=rng.normal(0, 0.5, (units, vocab_size)).astype(np.float32),
            dense_bias=rng.normal(0, 0.1, (vocab_size,)).astype(np.float32),
            position_embedding=rng.normal(0, 1, (meter.SIZE, position_embed)).astype(np.float32)
            if position_embed else None,
        )

    @classmethod
    def from_keras(cls, model) -> StepWeights:
        import keras

        emb = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)
               and layer.name != "position_embedding"]
        pos = [layer for layer in model.layers if layer.name == "position_embedding"]
        lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        if len(emb) != 1 or not lstms or len(dense) != 1:
            raise ValueError("expected Embedding -> LSTM... -> Dense")
        for layer in lstms:
            cell = layer.cell
            if cell.activation is not keras.activations.tanh or (
                cell.recurrent_activation is not keras.activations.sigmoid
            ):
                raise ValueError("the ONNX step supports tanh/sigmoid LSTMs only")
            if not cell.use_bias:
                raise ValueError("the ONNX step expects LSTMs with a bias")
        return cls(
            embedding=np.asarray(emb[0].embeddings.numpy(), np.float32),
            lstm=[
                tuple(np.asarray(w.numpy(), np.float32) for w in
                      (lay.cell.kernel, lay.cell.recurrent_kernel, lay.cell.bias))
                for lay in lstms
            ],
            dense_kernel=np.asarray(dense[0].kernel.numpy(), np.float32),
            dense_bias=np.asarray(dense[0].bias.numpy(), np.float32),
            position_embedding=np.asarray(pos[0].embeddings.numpy(), np.float32) if pos else None,
        )


def read_step(path: str | Path) -> StepWeights:
    """The weights back out of a model.onnx written by build_step (for TensorFlow comparisons)."""
    import onnx
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    lstm = []
    i = 0
    while f"W{i}" in init:
        w, b = init[f"W{i}"], init[f"b{i}"]
        units = w.shape[1] // 4
        lstm.append((w[:-units], w[-units:], b))
        i += 1
    return StepWeights(init["embedding"], lstm, init["dense_kernel"], init["dense_bias"],
                       init.get("position_embedding"))


def build_step(w: StepWeights):
    """The ONNX ModelProto of one step."""
    inputs = [("token", w.embedding)]
    if w.position_embedding is not None:
        inputs.append(("position", w.position_embedding))
    return build_lstm_step(inputs, w.lstm, w.dense_kernel, w.dense_bias)


def build_lstm_step(inputs: list[tuple[str, np.ndarray]],
                    lstm: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                    dense_kernel: np.ndarray, dense_bias: np.ndarray, name: str = "lstm_step"):
    """One step of Embeddings -> LSTM x L -> Dense as an ONNX ModelProto: each of ``inputs``
    (an int64 ``[B]`` input's name and its embedding table, in the order the LSTM's input
    concatenates them; the first is named ``token`` and comes first, then ``position``...)
    gathered and concatenated, then ``h``, ``c`` in, ``logits``, ``h_out``, ``c_out`` out.
    Keras gate order i, f, c, o; one MatMul per layer over [x, h]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    V = dense_kernel.shape[1]
    L, H = len(lstm), lstm[0][1].shape[0]
    inits = [
        numpy_helper.from_array(np.array([H, H, H, H], np.int64), "gate_split"),
        numpy_helper.from_array(dense_kernel, "dense_kernel"),
        numpy_helper.from_array(dense_bias, "dense_bias"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    if len(inputs) == 1:
        inits.insert(0, numpy_helper.from_array(inputs[0][1], "embedding"))
        nodes = [helper.make_node("Gather", ["embedding", inputs[0][0]], ["x0"], axis=0)]
    else:
        nodes = []
        for k, (inp, table) in enumerate(inputs):
            init = "embedding" if k == 0 else f"{inp}_embedding"
            inits.insert(k, numpy_helper.from_array(table, init))
            nodes.append(helper.make_node("Gather", [init, inp], [f"x_{inp}"], axis=0))
        nodes.append(helper.make_node("Concat", [f"x_{inp}" for inp, _ in inputs], ["x0"],
                                      axis=1))
    h_parts = [f"h{i}" for i in range(L)]
    c_parts = [f"c{i}" for i in range(L)]
    nodes += [
        helper.make_node("Split", ["h", "layer_split"], [f"{p}_" for p in h_parts], axis=0),
        helper.make_node("Split", ["c", "layer_split"], [f"{p}_" for p in c_parts], axis=0),
    ]
    inits.append(numpy_helper.from_array(np.ones(L, np.int64), "layer_split"))
    x = "x0"
    h_new, c_new = [], []
    for i, (kernel, recurrent, bias) in enumerate(lstm):
        inits += [
            numpy_helper.from_array(np.concatenate([kernel, recurrent], 0), f"W{i}"),
            numpy_helper.from_array(bias, f"b{i}"),
        ]
        n = f"l{i}_"
        nodes += [
            helper.make_node("Squeeze", [f"h{i}_", "axis0"], [n + "h"]),
            helper.make_node("Squeeze", [f"c{i}_", "axis0"], [n + "c"]),
            helper.make_node("Concat", [x, n + "h"], [n + "xh"], axis=1),
            helper.make_node("MatMul", [n + "xh", f"W{i}"], [n + "zm"]),
            helper.make_node("Add", [n + "zm", f"b{i}"], [n + "z"]),
            helper.make_node("Split", [n + "z", "gate_split"], [n + g for g in "ifgo"], axis=1),
            helper.make_node("Sigmoid", [n + "i"], [n + "si"]),
            helper.make_node("Sigmoid", [n + "f"], [n + "sf"]),
            helper.make_node("Tanh", [n + "g"], [n + "tg"]),
            helper.make_node("Sigmoid", [n + "o"], [n + "so"]),
            helper.make_node("Mul", [n + "sf", n + "c"], [n + "fc"]),
            helper.make_node("Mul", [n + "si", n + "tg"], [n + "ig"]),
            helper.make_node("Add", [n + "fc", n + "ig"], [n + "cn"]),
            helper.make_node("Tanh", [n + "cn"], [n + "tc"]),
            helper.make_node("Mul", [n + "so", n + "tc"], [n + "hn"]),
            helper.make_node("Unsqueeze", [n + "hn", "axis0"], [n + "hu"]),
            helper.make_node("Unsqueeze", [n + "cn", "axis0"], [n + "cu"]),
        ]
        x = n + "hn"
        h_new.append(n + "hu")
        c_new.append(n + "cu")
    nodes += [
        helper.make_node("Concat", h_new, ["h_out"], axis=0),
        helper.make_node("Concat", c_new, ["c_out"], axis=0),
        helper.make_node("MatMul", [x, "dense_kernel"], ["logits_m"]),
        helper.make_node("Add", ["logits_m", "dense_bias"], ["logits"]),
    ]
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    graph = helper.make_graph(
        nodes,
        name,
        inputs=[
            *[helper.make_tensor_value_info(inp, i64, ["B"]) for inp, _ in inputs],
            helper.make_tensor_value_info("h", f32, [L, "B", H]),
            helper.make_tensor_value_info("c", f32, [L, "B", H]),
        ],
        outputs=[
            helper.make_tensor_value_info("logits", f32, ["B", V]),
            helper.make_tensor_value_info("h_out", f32, [L, "B", H]),
            helper.make_tensor_value_info("c_out", f32, [L, "B", H]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="midi-companion"
    )
    model.ir_version = 8  # readable by onnxruntime releases back to 1.14
    onnx.checker.check_model(model)
    return model


def write_step(w: StepWeights, path: str | Path) -> None:
    """Write model.onnx atomically: a failed export leaves the previous file as it was."""
    write_atomic(Path(path), build_step(w).SerializeToString())


def write_package(w: StepWeights, vocab: Vocabulary, folder: str | Path) -> None:
    """A package's model.onnx and vocab.json, the vocabulary marked with the step's format
    (the format a reader of vocab.json learns the model's inputs from)."""
    folder = Path(folder)
    write_step(w, folder / "model.onnx")
    vocab.format = w.format
    vocab.save(folder / "vocab.json")
