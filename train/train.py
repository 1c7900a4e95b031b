"""`python -m train`: corpora -> curves -> vocabulary -> LSTM -> ONNX step -> evaluated package.

Interrupted runs resume from `--work DIR` (Keras BackupAndRestore, one backup per epoch);
the model package in `--out` is replaced only once the new one is complete and checked.
Several GPUs: the model is built under `tf.distribute.MirroredStrategy` (batch = global
batch); one device or none: the default strategy. No other code path differs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from companion.encoding.curves import Vocabulary, write_atomic
from companion.encoding.melody import EXTRACTION
from train.corpus import CorpusError, load_corpus
from train.dataset import BAR_HIDDEN, encode, prepare, tf_dataset, windows
from train.model import ModelConfig

log = logging.getLogger("train")

PARITY_TOL = 1e-4
#: Bumped when training changes what it does with the same settings (a work folder of an
#: earlier procedure is not resumed): 2 = length buckets, hold-then-decay schedule;
#: 3 = early stopping only once the decay has begun; 4 = metrical positions beside the
#: tokens, bars hidden in BAR_HIDDEN of the training windows.
PROCEDURE = 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    p.add_argument("--corpus", nargs="+", required=True, metavar="SPEC",
                   help="files, folders or music21:NAME corpora to train on")
    p.add_argument("--out", required=True, help="model package folder to write (models/NAME)")
    p.add_argument("--eval-corpus", nargs="*", default=[], metavar="SPEC",
                   help="held-out corpora the model never trains on, evaluated into the card")
    p.add_argument("--idiom", help="the music the model plays, in a few words (the card's "
                                   "\"idiom\", which `companion models` lists)")
    p.add_argument("--work", help="checkpoints and logs (default: runs/<package name>)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=8, help="early-stopping patience, epochs")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--window", type=int, default=128, help="training window, tokens")
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.25)
    p.add_argument("--position-embed", type=int, default=16,
                   help="width of the metrical position's embedding (0: no position input, "
                        "a format-1 package)")
    p.add_argument("--lr", type=float, default=1e-2,
                   help="learning rate, held, then decayed linearly to 1%% of it over the "
                        "last quarter of --epochs")
    add_split_options(p)
    return p.parse_args(argv)


def add_split_options(p: argparse.ArgumentParser) -> None:
    """The options every training command shares: the seed, the split, reading the corpus."""
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--val-frac", type=float, default=0.05)
    p.add_argument("--test-frac", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=None, help="corpus parsing processes")
    p.add_argument("--no-cache", action="store_true", help="re-read every file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def command(run_args: Callable[[argparse.Namespace], int],
            parse: Callable[[list[str] | None], argparse.Namespace],
            argv: list[str] | None) -> int:
    """A training command: its arguments parsed, run; a bad corpus or value is one line and
    exit 2, an interruption exit 1 (the same command resumes)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse(argv)
    try:
        return run_args(args)
    except (CorpusError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last epoch", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    return command(run, parse_args, argv)


def run(args: argparse.Namespace) -> int:
    t0 = time.time()
    out = Path(args.out)
    work = Path(args.work or Path("runs") / out.name)

    # -- data ------------------------------------------------------------------------------
    corpus = load_corpus(args.corpus, workers=args.workers, use_cache=not args.no_cache,
                         progress=not args.quiet)
    log.info("corpus: %s", corpus.summary())
    songs = prepare(corpus.melodies, args.seed, args.val_frac, args.test_frac)
    if len(songs.curves) < 3:
        raise CorpusError(f"{' '.join(args.corpus)}: {len(songs.curves)} melodies; need 3")
    log.info("%d melodies, %d exact duplicates dropped", len(songs.curves), songs.duplicates)
    curves, split = songs.curves, songs.split
    vocab = Vocabulary.build(curves[i] for i in split.train)
    seqs = encode(curves, vocab)
    pos = songs.positions()
    tr, va, te = ([seqs[i] for i in idx] for idx in (split.train, split.val, split.test))
    ptr, pva, pte = ([pos[i] for i in idx] for idx in (split.train, split.val, split.test))
    parts = (("train", tr), ("val", va), ("test", te))
    n_tok = {k: int(sum(len(s) - 1 for s in v)) for k, v in parts}
    log.info("vocabulary: %d curves + %d specials; tokens %s", len(vocab.curves),
             len(vocab.specials), n_tok)

    # -- model -----------------------------------------------------------------------------
    import keras

    keras.utils.set_random_seed(args.seed)
    if args.position_embed < 0:
        raise ValueError(f"--position-embed: expected 0 or more, got {args.position_embed}")
    mcfg = ModelConfig(vocab.size, args.embed, args.units, args.layers, args.dropout,
                       args.position_embed)
    run_key = _run_key(args, vocab)
    _prepare_work(work, run_key)
    history, train_s = _fit(args, mcfg, tr, va, ptr, pva, work)
    model = _load_best(mcfg, work)
    val_hidden = _val_nll_bar_hidden(args, model, va, pva) if mcfg.position_embed else None

    # -- export, check, evaluate into a staging folder, then swap ---------------------------
    from companion.engine.model import StepModel
    from train.evaluate import figures, held_out
    from train.export import StepWeights, write_package

    stage = out.parent / f".{out.name}.new"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    weights = StepWeights.from_keras(model)
    write_package(weights, vocab, stage)
    step = StepModel(stage)
    parity = check_parity(model, step, va[:8] or tr[:8], pva[:8] or ptr[:8])
    log.info("ONNX step vs Keras: max |logit difference| %.2e", parity)
    if parity > PARITY_TOL:
        raise ValueError(f"ONNX export differs from Keras by {parity:.2e} (> {PARITY_TOL})")
    test_fig = figures(step, tr, te, pte) if te else None
    card = {
        **weights.card(),
        **({"idiom": args.idiom} if args.idiom else {}),
        "corpora": list(args.corpus),
        "extraction": EXTRACTION,
        "corpus_sizes": {"files": corpus.files, "unreadable": len(corpus.failed),
                         "melodies": len(curves), "duplicates_dropped": songs.duplicates,
                         "tokens": n_tok,
                         "songs": {"train": len(tr), "val": len(va), "test": len(te)}},
        "vocabulary": {"curves": len(vocab.curves), "specials": vocab.specials, "size": vocab.size},
        "model": mcfg.to_dict(),
        "training": {"epochs_run": len(history), "best_epoch": _best_epoch(history),
                     "best_val_nll": min((h["val_nll"] for h in history), default=None),
                     **({"best_val_nll_bar_hidden": val_hidden, "bar_hidden": BAR_HIDDEN}
                        if mcfg.position_embed else {}),
                     "batch": args.batch, "window": args.window, "learning_rate": args.lr,
                     "patience": args.patience, "max_epochs": args.epochs, "seed": args.seed,
                     "seconds": round(train_s, 1), "tokens_per_second":
                         round(n_tok["train"] * len(history) / train_s) if train_s else None},
        "split": {"seed": args.seed, "val_frac": args.val_frac, "test_frac": args.test_frac},
        "onnx": {"parity_max_abs_diff": parity, "bytes": (stage / "model.onnx").stat().st_size},
        "held_out": {"test_split": test_fig},
        "versions": _versions(),
        "total_seconds": None,
    }
    # the evaluation corpora are read against this package's card (its corpora and split)
    write_atomic(stage / "card.json", json.dumps(card, indent=1).encode())
    for spec in args.eval_corpus:
        card["held_out"][spec] = held_out(StepModel(stage), [spec])
    card["total_seconds"] = round(time.time() - t0, 1)
    write_atomic(stage / "card.json", json.dumps(card, indent=1).encode())
    plot_history(history, stage / "training_curves.png", card)
    _swap_in(stage, out)
    log.info("wrote %s in %.0f s", out, time.time() - t0)
    _print_summary(card)
    return 0


def _fit(args, mcfg: ModelConfig, tr, va, ptr, pva, work: Path):
    """Train on windows of ``tr`` (positions ``ptr``), validating on ``va`` with the bar known."""
    import keras
    import tensorflow as tf

    from train.model import build, compile_model, decay_start_epoch, schedule

    xtr, ytr, wtr, ptr_w = windows(tr, args.window, ptr)
    xva, yva, wva, pva_w = windows(va, args.window, pva)
    if not mcfg.position_embed:
        ptr_w = pva_w = None
    # batches come in buckets of similar length, a few more than len/batch: an "epoch" is
    # this many steps of an endless stream, so that the schedule knows its length
    steps = -(-len(xtr) // args.batch)
    gpus = tf.config.list_logical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    with strategy.scope():
        model = build(mcfg)
        compile_model(model, schedule(args.lr, steps, args.epochs))
    ds_tr = tf_dataset(xtr, ytr, wtr, args.batch, shuffle=True, seed=args.seed,
                       per_token=True, positions=ptr_w, bar_hidden=BAR_HIDDEN).repeat()
    ds_va = tf_dataset(xva, yva, wva, args.batch, shuffle=False, seed=args.seed,
                       positions=pva_w)
    # its length, counted once (it is not shuffled): Keras then knows where it ends
    ds_va = ds_va.apply(tf.data.experimental.assert_cardinality(sum(1 for _ in ds_va)))
    log_csv = work / "history.csv"
    prior = _read_history(log_csv)
    if (work / "fit_done").exists():  # trained already; a later step failed: go on from there
        log.info("training finished earlier in %s; exporting its best weights", work)
        return prior, float((work / "fit_done").read_text())
    prior = _history_upto(log_csv, _backup_epoch(work / "backup"))
    best_so_far = min((h["val_nll"] for h in prior), default=None)
    # the backup last: a kill before it leaves the epoch to be run again (its history row is
    # dropped above on resume), never a backup ahead of the history
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(work / "best.weights.h5"),
                                        monitor="val_nll", mode="min",
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=best_so_far),
        # not while the rate is held: its large steps make the validation loss noisy, and a
        # run stopped there (at epoch 72 of 100, 8 epochs after a lucky low) never decays
        keras.callbacks.EarlyStopping(monitor="val_nll", mode="min", patience=args.patience,
                                      start_from_epoch=decay_start_epoch(args.epochs)),
        keras.callbacks.CSVLogger(str(log_csv), append=True),
        _atomic_backup(keras, work / "backup"),
    ]
    t = time.time()
    model.fit(ds_tr, validation_data=ds_va, epochs=args.epochs, steps_per_epoch=steps,
              callbacks=callbacks,
              verbose=0 if args.quiet else 1)
    seconds = time.time() - t
    (work / "fit_done").write_text(str(seconds))
    return _read_history(log_csv), seconds


def _atomic_backup(keras, folder: Path):
    """Keras's BackupAndRestore, written beside the previous backup and swapped in: Keras
    writes in place, and a kill during that write leaves a truncated file that the next run
    cannot load (with no earlier backup to fall back on after the first epoch)."""

    class AtomicBackup(keras.callbacks.BackupAndRestore):
        def _save_model(self) -> None:
            new = folder.with_name(folder.name + ".new")
            shutil.rmtree(new, ignore_errors=True)
            new.mkdir(parents=True)
            self.model.save_weights(str(new / Path(self._weights_path).name), overwrite=True)
            meta = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
            (new / Path(self._training_metadata_path).name).write_text(json.dumps(meta))
            _swap_in(new, folder)

    return AtomicBackup(str(folder))


def _backup_epoch(folder: Path) -> int:
    """Epochs the backup has done (0: none, training starts afresh)."""
    try:
        return int(json.loads((folder / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _history_upto(path: Path, epochs: int) -> list[dict]:
    """The history of the epochs the backup has: a row logged after it (the run killed
    before its backup) is dropped, since that epoch runs again."""
    rows = _read_history(path)
    keep = [h for h in rows if int(h["epoch"]) < epochs]
    if len(keep) != len(rows):
        with open(path) as f:
            lines = f.read().splitlines(keepends=True)
        write_atomic(path, "".join(lines[:1 + len(keep)]).encode())
    return keep


def _load_best(mcfg: ModelConfig, work: Path):
    from train.model import build

    model = build(mcfg)
    model.load_weights(str(work / "best.weights.h5"))
    return model


def _val_nll_bar_hidden(args, model, va, pva) -> float | None:
    """Validation nats per token with every bar hidden (the model serving calls of unknown
    meter): beside the training's validation, which knows the bars."""
    from companion.encoding import meter

    if not va:
        return None
    xva, yva, wva, p = windows(va, args.window, [meter.hide_bar(q) for q in pva])
    nats = tokens = 0.0
    for x, y, w in tf_dataset(xva, yva, wva, args.batch, shuffle=False, seed=args.seed,
                              positions=p):
        lg = np.asarray(model(x, training=False), np.float64)
        m = lg.max(axis=-1, keepdims=True)
        lse = (m + np.log(np.exp(lg - m).sum(axis=-1, keepdims=True)))[..., 0]
        target = np.take_along_axis(lg, np.asarray(y)[..., None].astype(np.int64), -1)[..., 0]
        nats += float(((lse - target) * np.asarray(w)).sum())
        tokens += float(np.asarray(w).sum())
    return nats / tokens


def check_parity(model, step, seqs, positions=None) -> float:
    """Max |logit difference| between Keras over whole songs and the ONNX step, token by
    token; ``positions`` (parallel to ``seqs``) fed to both where the model takes them."""
    worst = 0.0
    for k, s in enumerate(seqs):
        x = s[None, :].astype(np.int32)
        pos = None if positions is None else np.asarray(positions[k], np.int64)
        if len(model.inputs) > 1:
            if pos is None:
                raise ValueError("check_parity: the model takes positions; none given")
            x = {"tokens": x, "positions": pos[None, :].astype(np.int32)}
        full = np.asarray(model(x, training=False))[0]
        state = step.zero_state()
        for t, tok in enumerate(s):
            logits = step.step(int(tok), state, None if pos is None else int(pos[t]))
            worst = max(worst, float(np.abs(logits - full[t]).max()))
    return worst


def _run_key(args, vocab: Vocabulary) -> str:
    keys = ("corpus", "batch", "window", "embed", "units", "layers", "dropout", "lr", "seed",
            "val_frac", "test_frac", "epochs", "patience", "position_embed")
    raw = json.dumps({k: getattr(args, k) for k in keys} | {"procedure": PROCEDURE})
    raw += json.dumps(vocab.to_json())
    return hashlib.sha1(raw.encode()).hexdigest()


def _prepare_work(work: Path, key: str) -> None:
    """Resume only a run of the same data and settings; anything else starts afresh."""
    stamp = work / "run_key"
    if stamp.exists() and stamp.read_text().strip() == key:
        # a kill while a backup was being swapped in: the previous one is put back
        old, new = work / ".backup.old", work / "backup.new"
        if old.exists() and not (work / "backup").exists():
            os.replace(old, work / "backup")
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(new, ignore_errors=True)
        if (work / "backup").exists():
            log.info("resuming from %s", work / "backup")
        return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stamp.write_text(key)


def _read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _best_epoch(history: list[dict]) -> int | None:
    if not history:
        return None
    return int(min(history, key=lambda h: h["val_nll"])["epoch"]) + 1


def _swap_in(stage: Path, out: Path) -> None:
    """Replace the package folder in two renames; the old one is kept until the new is in place."""
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)


def plot_history(history: list[dict], path: Path, card: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    ep = [h["epoch"] + 1 for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ep, [h["nll"] for h in history], label="train")
    a.plot(ep, [h["val_nll"] for h in history], label="validation")
    fig_test = (card.get("held_out") or {}).get("test_split")
    if fig_test:
        best = fig_test["baselines"][fig_test["best_baseline"]]["nll"]
        a.axhline(best, color="grey", ls="--", label=f"best n-gram on test ({best:.2f})")
        lstm = fig_test["lstm"]["nll"]
        a.axhline(lstm, color="k", ls=":", label=f"LSTM on test ({lstm:.2f})")
    a.set(xlabel="epoch", ylabel="nats / token", title="cross-entropy")
    a.legend()
    b.plot(ep, [h["acc"] for h in history], label="train")
    b.plot(ep, [h["val_acc"] for h in history], label="validation")
    b.set(xlabel="epoch", ylabel="top-1 accuracy", title="next-curve accuracy")
    b.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("tensorflow", "tensorflow-cpu", "keras", "onnx", "onnxruntime", "music21", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _print_summary(card: dict) -> None:
    for name, fig in card["held_out"].items():
        if not fig:
            continue
        best = fig["best_baseline"]
        print(f"{name}: LSTM {fig['lstm']['nll']:.3f} nats/token, top-1 {fig['lstm']['top1']:.1%}; "
              f"best n-gram ({best}) {fig['baselines'][best]['nll']:.3f}; "
              f"LSTM {fig['lstm_vs_best_pct']:.1f}% below")
