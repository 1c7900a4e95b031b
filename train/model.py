"""The melody model: the token's embedding beside its metrical position's -> stacked LSTM
-> Dense over the curve vocabulary.

It outputs logits (softmax cross-entropy over the next token). train/export.py turns
one step of it into the ONNX model the companion runs. The position
(``companion.encoding.meter``, one of ``meter.SIZE`` ids) is the model's second input;
``position_embed`` 0 builds the model of tokens alone (package format 1).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass


@dataclass
class ModelConfig:
    vocab_size: int
    embed: int = 64
    units: int = 256
    layers: int = 2
    dropout: float = 0.25
    position_embed: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


def build(cfg: ModelConfig):
    import keras
    from keras import layers

    from companion.encoding import meter

    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = layers.Embedding(cfg.vocab_size, cfg.embed, name="embedding")(tokens)
    inputs = tokens
    if cfg.position_embed:
        positions = keras.Input(shape=(None,), dtype="int32", name="positions")
        p = layers.Embedding(meter.SIZE, cfg.position_embed, name="position_embedding")(positions)
        x = layers.Concatenate(name="token_and_position")([x, p])
        inputs = {"tokens": tokens, "positions": positions}
    for i in range(cfg.layers):
        x = layers.LSTM(cfg.units, return_sequences=True, name=f"lstm{i}")(x)
        x = layers.Dropout(cfg.dropout, name=f"dropout{i}")(x)
    logits = layers.Dense(cfg.vocab_size, name="logits")(x)
    return keras.Model(inputs, logits, name="melody_lstm")


#: The last this fraction of a run's steps decays the learning rate linearly to 1% of it.
DECAY_FRACTION = 0.25


@functools.cache
def _hold_then_decay():
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="midi_companion")
    class HoldThenDecay(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, learning_rate: float, total_steps: int, decay_steps: int):
            self.learning_rate = learning_rate
            self.total_steps = total_steps
            self.decay_steps = decay_steps

        def __call__(self, step):
            start = float(self.total_steps - self.decay_steps)
            frac = ops.clip((ops.cast(step, "float32") - start) / max(1, self.decay_steps),
                            0.0, 1.0)
            return self.learning_rate * (1.0 - 0.99 * frac)

        def get_config(self) -> dict:
            return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                    "decay_steps": self.decay_steps}

    return HoldThenDecay


def decay_start_epoch(epochs: int) -> int:
    """The first epoch (from 0) of the decay, for ``epochs`` epochs of equal steps."""
    return epochs - max(1, round(epochs * DECAY_FRACTION))


def schedule(learning_rate: float, steps_per_epoch: int, epochs: int):
    """The learning rate held, then decayed linearly to 1% of it from the start of epoch
    ``decay_start_epoch(epochs)`` to the end (where early stopping starts watching too).
    Measured on these tunes (2 x 256, 12 epochs): holding a high rate learns fastest (a
    warm-up or an early cosine decay cost 1.5 epochs of progress), and the final decay then
    gains what the noise of its large steps hid (2.471 -> 2.377 nats in the last 3 epochs)."""
    total = steps_per_epoch * epochs
    return _hold_then_decay()(float(learning_rate), int(total),
                              steps_per_epoch * (epochs - decay_start_epoch(epochs)))


def compile_model(model, learning_rate) -> None:
    """Adam (``learning_rate`` a number or a schedule), softmax cross-entropy on logits."""
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
