"""The melody model: Embedding -> stacked LSTM -> Dense over the curve vocabulary.

It outputs logits (softmax cross-entropy over the next token). train/export.py turns
one step of it into the ONNX model the companion runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ModelConfig:
    vocab_size: int
    embed: int = 64
    units: int = 256
    layers: int = 2
    dropout: float = 0.25

    def to_dict(self) -> dict:
        return asdict(self)


def build(cfg: ModelConfig):
    import keras
    from keras import layers

    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = layers.Embedding(cfg.vocab_size, cfg.embed, name="embedding")(tokens)
    for i in range(cfg.layers):
        x = layers.LSTM(cfg.units, return_sequences=True, name=f"lstm{i}")(x)
        x = layers.Dropout(cfg.dropout, name=f"dropout{i}")(x)
    logits = layers.Dense(cfg.vocab_size, name="logits")(x)
    return keras.Model(tokens, logits, name="melody_lstm")


def compile_model(model, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # Keras averages the loss over every position, padding included; these weighted
        # metrics average over real tokens only: `nll` is the true nats per token.
        weighted_metrics=[
            keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="nll"),
            keras.metrics.SparseCategoricalAccuracy(name="acc"),
        ],
    )
