"""Melodies to token sequences, the song-level split, and training windows.

Windows hold a song's tokens with labels shifted by ONE step (the tutorial shifted by
the window length). Short windows are padded, and the padded positions carry zero
weight in the loss: no real token stands in for padding. Beside each token goes the
metrical position of its note's onset (``companion.encoding.meter``; ``Melody.positions``):
``bos`` takes the first note's, a curve's token the note it arrives at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from companion.encoding import meter
from companion.encoding.curves import Vocabulary, curves_from_notes
from companion.encoding.melody import Melody

#: The share of training windows whose bar is hidden (``meter.hide_bar``), drawn afresh each
#: epoch: the model then also serves calls of unknown meter.
BAR_HIDDEN = 0.3


def melody_curves(m: Melody) -> np.ndarray:
    return curves_from_notes(m.pitches, m.onsets)


@dataclass
class Split:
    train: list[int]
    val: list[int]
    test: list[int]


#: Songs that open with the same this-many curves are one tune family (the same tune in
#: two collections, or two settings of it): a family lies wholly in one part of the split,
#: so that no test tune has a near-copy among the training songs.
FAMILY_CURVES = 16


def split_songs(
    names: Sequence[str],
    seed: int,
    val_frac: float = 0.05,
    test_frac: float = 0.1,
    families: Sequence[bytes] | None = None,
) -> Split:
    """A seeded song-level split; the same song names (and families) and seed give the same split.

    Whole families are drawn into test, then validation, until each has its share of songs.
    """
    groups: dict[object, list[int]] = {}
    for i in range(len(names)):
        groups.setdefault(families[i] if families is not None else i, []).append(i)
    order = sorted(groups.values(), key=lambda g: min((names[i], i) for i in g))
    rng = np.random.default_rng(seed)
    perm = [order[i] for i in rng.permutation(len(order))]
    n = len(names)
    n_test = max(1, round(n * test_frac)) if len(perm) >= 3 else 0
    n_val = max(1, round(n * val_frac)) if len(perm) >= 3 else 0
    test: list[int] = []
    val: list[int] = []
    train: list[int] = []
    for g in perm:
        if len(test) < n_test:
            test.extend(g)
        elif len(val) < n_val:
            val.extend(g)
        else:
            train.extend(g)
    return Split(train=sorted(train), val=sorted(val), test=sorted(test))


@dataclass
class Songs:
    names: list[str]
    curves: list[np.ndarray]
    split: Split
    duplicates: int  # melodies dropped as exact copies of an earlier one
    melodies: list[Melody]  # the melody of each of ``curves``

    def positions(self) -> list[np.ndarray]:
        """The position of each song's steps (``Melody.positions``), parallel to its tokens."""
        return [m.positions() for m in self.melodies]


def prepare(melodies: Sequence[Melody], seed: int, val_frac: float, test_frac: float) -> Songs:
    """Melodies with at least one curve, exact duplicates dropped, split by tune family.

    Training and evaluation both call this, so that they agree on the split.
    """
    seen: set[bytes] = set()
    names: list[str] = []
    curves: list[np.ndarray] = []
    kept: list[Melody] = []
    for m in melodies:
        if len(m) < 2:
            continue
        c = melody_curves(m)
        if c.tobytes() in seen:
            continue
        seen.add(c.tobytes())
        names.append(m.name)
        curves.append(c)
        kept.append(m)
    families = [c[:FAMILY_CURVES].tobytes() for c in curves]
    split = split_songs(names, seed, val_frac, test_frac, families)
    dropped = sum(len(m) >= 2 for m in melodies) - len(curves)
    return Songs(names, curves, split, dropped, kept)


def encode(songs: Sequence[np.ndarray], vocab: Vocabulary) -> list[np.ndarray]:
    """Token sequences, each ``bos`` then one token per curve."""
    return [vocab.encode(c) for c in songs]


def windows(seqs: Sequence[np.ndarray], length: int,
            positions: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
    """``(inputs, labels, weights)``, each ``[N, length]``: labels[t] = inputs[t+1] of the song;
    with ``positions`` (one array per song, parallel to its tokens) a fourth array, the
    positions of the inputs.

    A song longer than ``length`` + 1 tokens is cut into consecutive windows.
    """
    if positions is not None and [len(p) for p in positions] != [len(s) for s in seqs]:
        raise ValueError("windows: positions must be parallel to the token sequences")
    xs, ys, ws, ps = [], [], [], []
    for k, s in enumerate(seqs):
        for start in range(0, len(s) - 1, length):
            y = s[start + 1 : start + length + 1]
            n = len(y)
            pad = length - n
            xs.append(np.pad(s[start : start + n], (0, pad)))
            ys.append(np.pad(y, (0, pad)))
            ws.append(np.pad(np.ones(n, np.float32), (0, pad)))
            if positions is not None:
                ps.append(np.pad(positions[k][start : start + n], (0, pad)))
    if not xs:
        empty = (np.zeros((0, length), np.int32),) * 2 + (np.zeros((0, length), np.float32),)
        return empty if positions is None else (*empty, np.zeros((0, length), np.int32))
    out = (np.array(xs, np.int32), np.array(ys, np.int32), np.array(ws, np.float32))
    return out if positions is None else (*out, np.array(ps, np.int32))


#: Batches gather windows of about one length (these bounds, in tokens) and are cut to
#: their longest window: most songs are shorter than a window, and padding costs as much
#: compute as a real token.
BUCKETS = (16, 32, 48, 64, 72, 80, 88, 96, 104, 112, 120)


def tf_dataset(x, y, w, batch: int, shuffle: bool, seed: int, per_token: bool = False,
               positions=None, bar_hidden: float = 0.0):
    """A ``tf.data`` pipeline of ``(inputs, labels, weights)`` batches of windows of about
    one length (``BUCKETS``), each batch cut to its longest window; reshuffled every epoch.
    With ``positions`` (``[N, length]``, parallel to ``x``) the inputs are
    ``{"tokens", "positions"}``, and each window has its bar hidden (``meter.hide_bar``)
    with probability ``bar_hidden``, drawn afresh each time the data set is run through
    (each epoch), from ``seed``.

    Keras averages a batch's loss over all its positions, padding included, so that a real
    token of a batch of short windows would weigh more than one of a batch of long ones.
    ``per_token`` scales each batch's weights to make the loss the mean over its real
    tokens, every token weighing the same (for training; a weighted metric over such
    batches weighs batches, not tokens, so evaluation keeps the 0/1 weights).
    """
    import tensorflow as tf

    n = w.sum(axis=1).astype(np.int32)
    p = np.zeros_like(x) if positions is None else np.asarray(positions, np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x, p, y, w, n))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if positions is not None and bar_hidden > 0:
        draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
        below = int(bar_hidden * 2**31)

        def hide(window, r):
            x, p, y, w, n = window
            hidden = meter.UNKNOWN_BAR * meter.PHASES + p % meter.PHASES
            return x, tf.where(r % 2**31 < below, hidden, p), y, w, n

        ds = tf.data.Dataset.zip((ds, draws)).map(hide)
    ds = ds.map(lambda x, p, y, w, n: (x[:n], p[:n], y[:n], w[:n]))
    ds = ds.bucket_by_sequence_length(
        lambda x, p, y, w: tf.shape(x)[0], [b + 1 for b in BUCKETS], [batch] * (len(BUCKETS) + 1))
    if per_token:
        ds = ds.map(lambda x, p, y, w: (x, p, y, w * tf.cast(tf.size(w), tf.float32)
                                        / tf.maximum(tf.reduce_sum(w), 1.0)))
    if positions is None:
        ds = ds.map(lambda x, p, y, w: (x, y, w))
    else:
        ds = ds.map(lambda x, p, y, w: ({"tokens": x, "positions": p}, y, w))
    return ds.prefetch(tf.data.AUTOTUNE)
