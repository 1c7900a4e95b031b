"""`python -m train.harmony`: tunes with chords -> harmonic steps -> LSTM -> ONNX step ->
evaluated harmony package (docs/interface.md, kind "harmony"; docs/harmony.md).

The steps are companion.encoding.harmony's: a note step per melody note, a slot step per
quarter note, chords relative to the melody's first note. The split is by tune family and
seeded, as the melody model's (train.dataset.split_songs): the test tunes are never
trained on and their figures go into the card (train.harmony_eval). Interrupted runs
resume from ``--work`` as ``python -m train`` does; the package in ``--out`` is replaced
only once the new one is complete and checked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from companion.encoding import meter
from companion.encoding.chords import ChordVocabulary
from companion.encoding.curves import Vocabulary, curves_from_notes, write_atomic
from companion.encoding.harmony import PITCHES, SLOT, StepVocab, chords_at, slots, tune_steps
from companion.encoding.melody import EXTRACTION
from companion.engine.harmony import HarmonyModel, vocab_json
from train.corpus import CorpusError
from train.dataset import FAMILY_CURVES, split_songs
from train.harmony_corpus import load_tunes
from train.harmony_eval import EvalTune, figures
from train.train import add_split_options, command

log = logging.getLogger("train.harmony")

PARITY_TOL = 1e-4
#: Bumped when training changes what it does with the same settings.
PROCEDURE = 4  # 2: slots fed a wrong chord; 3: a slot step reads the key heard so far;
#  4: slots where the live chord never changes weigh offbeat_weight
#: The share of training windows whose bar is hidden (meter.hide_bar), drawn each epoch.
BAR_HIDDEN = 0.3
#: The share of training slots fed a wrong chord (``tf_dataset``), drawn each epoch.
WRONG_CHORD = 0.75
#: The loss weight of a slot where the live accompanist never changes the chord (not a
#: bar's first beat or the middle of a bar of four), against 1 where it may.
OFFBEAT_WEIGHT = 0.3


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m train.harmony",
                                description=__doc__.splitlines()[0])
    p.add_argument("--corpus", nargs="+", required=True, metavar="SPEC",
                   help="files, folders or music21:NAME corpora of tunes with chords")
    p.add_argument("--out", required=True, help="harmony package folder to write")
    p.add_argument("--chords", choices=("auto", "symbols", "voices"), default="auto",
                   help="where chords come from: chord symbols, the voices (chorales), or "
                        "symbols where a tune has any, else its voices")
    p.add_argument("--idiom", help="the music, in a few words (the card's \"idiom\")")
    p.add_argument("--work", help="checkpoints and logs (default: runs/<package name>)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--window", type=int, default=192, help="training window, steps")
    p.add_argument("--embed", type=int, default=48)
    p.add_argument("--pitch-embed", type=int, default=8)
    p.add_argument("--position-embed", type=int, default=12)
    p.add_argument("--units", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--wrong-chord", type=float, default=WRONG_CHORD,
                   help="the share of training slots fed a wrong previous chord (the target "
                        "kept), drawn each epoch")
    p.add_argument("--offbeat-weight", type=float, default=OFFBEAT_WEIGHT,
                   help="the loss weight of a slot where the live chord never changes (not "
                        "a bar's first beat or the middle of a bar of four), against 1")
    p.add_argument("--min-chord-count", type=int, default=5,
                   help="a chord shape (quality and bass) seen fewer times in the training "
                        "tunes takes its nearest plainer shape")
    add_split_options(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    return command(run, parse_args, argv)


def prepare(tunes, seed: int, val_frac: float, test_frac: float):
    """Tunes with at least one slot, exact duplicates (same melody) dropped, split by tune
    family as the melody model's are."""
    seen, kept, curves = set(), [], []
    for t in tunes:
        c = curves_from_notes(t.melody.pitches, t.melody.onsets)
        if c.tobytes() in seen or not len(slots(t.melody)):
            continue
        seen.add(c.tobytes())
        kept.append(t)
        curves.append(c)
    families = [c[:FAMILY_CURVES].tobytes() for c in curves]
    split = split_songs([t.melody.name for t in kept], seed, val_frac, test_frac, families)
    return kept, curves, split


def build_steps(tunes, vocab: StepVocab) -> list[EvalTune]:
    out = []
    for t in tunes:
        sl = slots(t.melody)
        out.append(EvalTune(t.melody, sl, tune_steps(t.melody, chords_at(sl.times, t.changes),
                                                      sl, vocab)))
    return out


def wrong_chords(s, vocab: StepVocab, rng: np.random.Generator) -> np.ndarray:
    """For each step of ``s``, the input token of its slot fed a wrong chord (a note step's
    own token): half the time the chord before the last change (a change the model missed),
    else another chord of the same tune."""
    alt = s.tokens.copy()
    y = s.targets[s.is_slot]
    where = np.flatnonzero(s.is_slot)
    before = ChordVocabulary.NONE  # the chord before the last change, at each slot
    held = ChordVocabulary.NONE  # the chord fed (the previous slot's)
    for j, k in enumerate(where):
        if j and y[j - 1] != held:
            before, held = held, int(y[j - 1])
        other = int(y[rng.integers(len(y))])
        pick = before if rng.random() < 0.5 else other
        if pick == held:
            pick = other if other != held else (held + 1 + rng.integers(vocab.chords.size - 1)) \
                % vocab.chords.size
        alt[k] = vocab.slot_token(int(pick))
    return alt


def step_weights(t: EvalTune, offbeat: float) -> np.ndarray:
    """Each step's loss weight: 1 at a slot where the live chord may change (a bar's first
    beat, the middle of a bar of four: ``Slots.strong``), ``offbeat`` at the other slots, 0
    at note steps."""
    w = np.zeros(len(t.steps), np.float32)
    w[t.steps.is_slot] = np.where(t.slots.strong(), 1.0, offbeat)
    return w


def windows(steps, length: int, vocab: StepVocab | None = None, seed: int = 0,
            weights=None):
    """(tokens, pitches, positions, targets, weights, wrong), each ``[N, length]``:
    consecutive windows of each tune's steps, padded; weights ``weights`` (one array per
    tune; None: 1 at slot steps), 0 at note steps and padding;
    ``wrong`` the tokens with each slot fed a wrong chord (``wrong_chords``; with no
    ``vocab``, the tokens)."""
    rng = np.random.default_rng(seed)
    cols = [[], [], [], [], [], []]
    for k, s in enumerate(steps):
        alt = s.tokens if vocab is None else wrong_chords(s, vocab, rng)
        wt = (s.targets >= 0).astype(np.float32) if weights is None else weights[k]
        for a in range(0, len(s), length):
            n = min(length, len(s) - a)
            pad = length - n
            y = s.targets[a:a + n]
            for col, arr in zip(cols, (s.tokens[a:a + n], s.pitches[a:a + n],
                                       s.positions[a:a + n], np.maximum(y, 0),
                                       wt[a:a + n], alt[a:a + n]), strict=True):
                col.append(np.pad(arr, (0, pad)))
    return tuple(np.array(c, np.float32 if i == 4 else np.int32) for i, c in enumerate(cols))


def tf_dataset(w, batch: int, shuffle: bool, seed: int, bar_hidden: float = 0.0,
               wrong: float = 0.0):
    """Batches ``({"tokens", "pitches", "positions"}, targets, weights)``; the weights of a
    batch scaled so that its loss is the mean over its slots. Drawn afresh each epoch: each
    window's bar hidden with probability ``bar_hidden``, and each slot step fed a wrong
    chord (``windows``' last array) with probability ``wrong``, its target kept: the model
    learns to leave a chord the melody no longer fits, as it must when it runs on its own
    chords (live), not only on a tune's."""
    import tensorflow as tf

    tok, pit, pos, y, wt, alt = w
    ds = tf.data.Dataset.from_tensor_slices((tok, pit, pos, y, wt, alt))
    if shuffle:
        ds = ds.shuffle(len(tok), seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
    below = int(bar_hidden * 2**31)

    def noise(window, r):
        t, pi, p, y, w, a = window
        hidden = meter.UNKNOWN_BAR * meter.PHASES + p % meter.PHASES
        p = tf.where(r % 2**31 < below, hidden, p)
        u = tf.random.stateless_uniform(tf.shape(t), seed=tf.stack([r, r // 7 + 1]))
        t = tf.where((u < wrong) & (w > 0), a, t)
        return t, pi, p, y, w

    ds = tf.data.Dataset.zip((ds, draws)).map(noise)
    ds = ds.batch(batch)
    ds = ds.map(lambda t, pi, p, y, w: (
        {"tokens": t, "pitches": pi, "positions": p}, y,
        w * tf.cast(tf.size(w), tf.float32) / tf.maximum(tf.reduce_sum(w), 1.0)))
    return ds.prefetch(tf.data.AUTOTUNE)


def build_model(vocab: StepVocab, args):
    import keras
    from keras import layers

    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    pitches = keras.Input(shape=(None,), dtype="int32", name="pitches")
    positions = keras.Input(shape=(None,), dtype="int32", name="positions")
    x = layers.Concatenate(name="inputs")([
        layers.Embedding(vocab.input_size, args.embed, name="embedding")(tokens),
        layers.Embedding(PITCHES, args.pitch_embed, name="pitch_embedding")(pitches),
        layers.Embedding(meter.SIZE, args.position_embed, name="position_embedding")(positions),
    ])
    for i in range(args.layers):
        x = layers.LSTM(args.units, return_sequences=True, name=f"lstm{i}")(x)
        x = layers.Dropout(args.dropout, name=f"dropout{i}")(x)
    logits = layers.Dense(vocab.output_size, name="logits")(x)
    return keras.Model({"tokens": tokens, "pitches": pitches, "positions": positions}, logits,
                       name="harmony_lstm")


def export(model, vocab: StepVocab, folder: Path) -> None:
    """model.onnx (train.export.build_lstm_step: token, pitch, position, h, c) and
    harmony.json."""
    from train.export import build_lstm_step

    def table(name):
        return np.asarray(model.get_layer(name).embeddings.numpy(), np.float32)

    lstm = []
    for i in range(sum(1 for la in model.layers if la.name.startswith("lstm"))):
        cell = model.get_layer(f"lstm{i}").cell
        lstm.append(tuple(np.asarray(w.numpy(), np.float32)
                          for w in (cell.kernel, cell.recurrent_kernel, cell.bias)))
    dense = model.get_layer("logits")
    proto = build_lstm_step(
        [("token", table("embedding")), ("pitch", table("pitch_embedding")),
         ("position", table("position_embedding"))], lstm,
        np.asarray(dense.kernel.numpy(), np.float32), np.asarray(dense.bias.numpy(), np.float32),
        name="harmony_step")
    write_atomic(folder / "model.onnx", proto.SerializeToString())
    write_atomic(folder / "harmony.json", json.dumps(vocab_json(vocab), indent=1).encode())


def random_package(vocab: StepVocab, folder: str | Path, units: int = 32, layers: int = 1,
                   seed: int = 0) -> Path:
    """A harmony package with random weights and a card: the real formats, no TensorFlow (for
    tests)."""
    from train.export import build_lstm_step

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    tables = [("token", rng.normal(0, 1, (vocab.input_size, 8))),
              ("pitch", rng.normal(0, 1, (PITCHES, 4))),
              ("position", rng.normal(0, 1, (meter.SIZE, 4)))]
    lstm, d_in = [], 16
    for _ in range(layers):
        lstm.append((rng.normal(0, 0.3, (d_in, 4 * units)), rng.normal(0, 0.3, (units, 4 * units)),
                     rng.normal(0, 0.1, 4 * units)))
        d_in = units
    f32 = [(n, t.astype(np.float32)) for n, t in tables]
    proto = build_lstm_step(f32, [tuple(w.astype(np.float32) for w in x) for x in lstm],
                            rng.normal(0, 0.5, (units, vocab.output_size)).astype(np.float32),
                            rng.normal(0, 0.1, vocab.output_size).astype(np.float32),
                            name="harmony_step")
    write_atomic(folder / "model.onnx", proto.SerializeToString())
    write_atomic(folder / "harmony.json", json.dumps(vocab_json(vocab), indent=1).encode())
    write_atomic(folder / "card.json", json.dumps({"kind": "harmony", "format": 1,
                                                   "corpora": []}).encode())
    return folder


def check_parity(model, step, tunes) -> float:
    """Max |logit difference| between Keras over whole tunes and the ONNX step."""
    worst = 0.0
    for t in tunes:
        s = t.steps
        x = {"tokens": s.tokens[None].astype(np.int32), "pitches": s.pitches[None].astype(
            np.int32), "positions": s.positions[None].astype(np.int32)}
        full = np.asarray(model(x, training=False))[0]
        state = step.zero_state()
        for k in range(len(s)):
            lg = step.step(int(s.tokens[k]), int(s.pitches[k]), int(s.positions[k]), state)
            worst = max(worst, float(np.abs(lg - full[k]).max()))
    return worst


def step_us(step, n: int = 2000) -> float:
    """The median time of one live step (microseconds), on this machine."""
    state = step.zero_state()
    times = []
    for k in range(n):
        t = time.perf_counter()
        step.step(k % 50, k % 13, k % meter.SIZE, state)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e6)


def run(args) -> int:
    from train.train import (
        _atomic_backup,
        _backup_epoch,
        _best_epoch,
        _history_upto,
        _prepare_work,
        _read_history,
        _swap_in,
        _versions,
    )

    t0 = time.time()
    out = Path(args.out)
    work = Path(args.work or Path("runs") / out.name)
    corpus = load_tunes(args.corpus, args.chords, args.workers, not args.no_cache)
    log.info("corpus: %s", corpus.summary())
    tunes, curves, split = prepare(corpus.tunes, args.seed, args.val_frac, args.test_frac)
    if len(tunes) < 3:
        raise CorpusError(f"{' '.join(args.corpus)}: {len(tunes)} tunes with chords; need 3")
    curve_vocab = Vocabulary.build(curves[i] for i in split.train)
    train_chords = []
    for i in split.train:
        sl = slots(tunes[i].melody)
        train_chords += [c for c in chords_at(sl.times, tunes[i].changes) if c is not None]
    vocab = StepVocab(curve_vocab, ChordVocabulary.build(train_chords, args.min_chord_count))
    steps = build_steps(tunes, vocab)
    tr, va, te = ([steps[i] for i in idx] for idx in (split.train, split.val, split.test))
    n_slots = {k: int(sum(s.steps.is_slot.sum() for s in v))
               for k, v in (("train", tr), ("val", va), ("test", te))}
    n_steps = {k: int(sum(len(s.steps) for s in v))
               for k, v in (("train", tr), ("val", va), ("test", te))}
    log.info("%d tunes (%d/%d/%d); %d curves, %d chord shapes (%d chords); slots %s",
             len(tunes), len(tr), len(va), len(te), len(curve_vocab.curves),
             len(vocab.chords.shapes), vocab.chords.size, n_slots)

    import keras

    from train.model import compile_model, decay_start_epoch, schedule

    keras.utils.set_random_seed(args.seed)
    key = json.dumps({k: getattr(args, k) for k in (
        "corpus", "chords", "batch", "window", "embed", "pitch_embed", "position_embed", "units",
        "layers", "dropout", "lr", "seed", "val_frac", "test_frac", "epochs", "patience",
        "min_chord_count", "wrong_chord", "offbeat_weight")} | {"procedure": PROCEDURE})
    key += json.dumps(vocab_json(vocab))
    _prepare_work(work, hashlib.sha1(key.encode()).hexdigest())
    wtr = windows([s.steps for s in tr], args.window, vocab, args.seed,
                  [step_weights(s, args.offbeat_weight) for s in tr])
    wva = windows([s.steps for s in va or tr[:4]], args.window, weights=[
        step_weights(s, args.offbeat_weight) for s in va or tr[:4]])
    steps_per_epoch = -(-len(wtr[0]) // args.batch)
    model = build_model(vocab, args)
    compile_model(model, schedule(args.lr, steps_per_epoch, args.epochs))
    ds_tr = tf_dataset(wtr, args.batch, True, args.seed, BAR_HIDDEN, args.wrong_chord).repeat()
    ds_va = tf_dataset(wva, args.batch, False, args.seed)
    log_csv = work / "history.csv"
    if (work / "fit_done").exists():
        train_s = float((work / "fit_done").read_text())
    else:
        prior = _history_upto(log_csv, _backup_epoch(work / "backup"))
        best = min((h["val_nll"] for h in prior), default=None)
        callbacks = [
            keras.callbacks.ModelCheckpoint(str(work / "best.weights.h5"), monitor="val_nll",
                                            mode="min", save_best_only=True,
                                            save_weights_only=True,
                                            initial_value_threshold=best),
            keras.callbacks.EarlyStopping(monitor="val_nll", mode="min",
                                          patience=args.patience,
                                          start_from_epoch=decay_start_epoch(args.epochs)),
            keras.callbacks.CSVLogger(str(log_csv), append=True),
            _atomic_backup(keras, work / "backup"),
        ]
        t = time.time()
        model.fit(ds_tr, validation_data=ds_va, epochs=args.epochs,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                  verbose=0 if args.quiet else 2)
        train_s = time.time() - t
        (work / "fit_done").write_text(str(train_s))
    history = _read_history(log_csv)
    model = build_model(vocab, args)
    model.load_weights(str(work / "best.weights.h5"))

    stage = out.parent / f".{out.name}.new"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    export(model, vocab, stage)
    step = HarmonyModel(stage)
    parity = check_parity(model, step, (va or tr)[:4])
    log.info("ONNX step vs Keras: max |logit difference| %.2e", parity)
    if parity > PARITY_TOL:
        raise ValueError(f"ONNX export differs from Keras by {parity:.2e} (> {PARITY_TOL})")
    test_fig = figures(step, te) if te else None
    card = {
        "kind": "harmony",
        "format": 1,
        **({"idiom": args.idiom} if args.idiom else {}),
        "corpora": list(args.corpus),
        "chords_from": sorted({t.source for t in tunes}),
        "extraction": EXTRACTION,
        "steps": {"slot_quarters": SLOT, "reference": "the melody's first note",
                  "slot_input": "the key heard so far",
                  "order": "a slot step before the notes starting on its beat"},
        "corpus_sizes": {"files": corpus.files, "unreadable": len(corpus.failed),
                         "tunes": len(tunes), "without_chords": corpus.no_chords,
                         "chord_symbols_unread": corpus.unread_symbols,
                         "tunes_split": {"train": len(tr), "val": len(va), "test": len(te)},
                         "slots": n_slots, "steps": n_steps},
        "split": {"seed": args.seed, "val_frac": args.val_frac, "test_frac": args.test_frac,
                  "by": f"tune family (the first {FAMILY_CURVES} curves)",
                  "test_tunes": [tunes[i].melody.name for i in split.test]},
        "vocabulary": {"curves": len(curve_vocab.curves), "inputs": vocab.input_size,
                       "chord_shapes": [f"{q}/{b}" if b else q for q, b in vocab.chords.shapes],
                       "chords": vocab.chords.size},
        "model": {"embed": args.embed, "pitch_embed": args.pitch_embed,
                  "position_embed": args.position_embed, "units": args.units,
                  "layers": args.layers, "dropout": args.dropout},
        "training": {"epochs_run": len(history), "best_epoch": _best_epoch(history),
                     "best_val_nll": min((h["val_nll"] for h in history), default=None),
                     "bar_hidden": BAR_HIDDEN, "wrong_chord": args.wrong_chord,
                     "offbeat_weight": args.offbeat_weight,
                     "batch": args.batch, "window": args.window,
                     "learning_rate": args.lr, "patience": args.patience,
                     "max_epochs": args.epochs, "seed": args.seed,
                     "seconds": round(train_s, 1),
                     "steps_per_second": round(n_steps["train"] * len(history) / train_s)
                     if train_s else None},
        "onnx": {"parity_max_abs_diff": parity, "bytes": (stage / "model.onnx").stat().st_size,
                 "step_us": round(step_us(step), 1)},
        "held_out": {"test_split": test_fig},
        "versions": _versions(),
        "total_seconds": round(time.time() - t0, 1),
    }
    write_atomic(stage / "card.json", json.dumps(card, indent=1).encode())
    _plot(history, stage / "training_curves.png")
    _swap_in(stage, out)
    log.info("wrote %s in %.0f s", out, time.time() - t0)
    if test_fig:
        print(summary(test_fig))
    return 0


def summary(fig: dict) -> str:
    tf_, fr = fig["teacher_forced"], fig["free_running"]
    g, own = fr["greedy"], fr["tunes_own_chords"]
    return (f"test ({fig['tunes']} tunes, {tf_['slots']} slots): {tf_['nll']:.3f} nats/slot, "
            f"top-1 {tf_['top1']:.1%} (triad {tf_['top1_triad']:.1%}; holding the previous "
            f"chord {tf_['hold_previous']['top1']:.1%}); at changes triad "
            f"{tf_['top1_triad_at_changes']:.1%}\n"
            f"free-running greedy: note-in-chord {g['note_in_chord']:.1%} (strong "
            f"{g['note_in_chord_strong']:.1%}) vs the tunes' own {own['note_in_chord']:.1%} "
            f"({own['note_in_chord_strong']:.1%}); agreement {g['agreement_strong']:.1%}; "
            f"changes/bar {g['changes_per_bar']:.2f} vs {own['changes_per_bar']:.2f}; the "
            f"whole-bar rule: note-in-chord {fr['rule_whole_bar']['note_in_chord']:.1%}, "
            f"agreement {fr['rule_whole_bar']['agreement_strong']:.1%}")


def _plot(history, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    ep = [h["epoch"] + 1 for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ep, [h["nll"] for h in history], label="train")
    a.plot(ep, [h["val_nll"] for h in history], label="validation")
    a.set(xlabel="epoch", ylabel="nats / slot", title="chord cross-entropy")
    a.legend()
    b.plot(ep, [h["acc"] for h in history], label="train")
    b.plot(ep, [h["val_acc"] for h in history], label="validation")
    b.set(xlabel="epoch", ylabel="top-1 accuracy", title="chord accuracy")
    b.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
