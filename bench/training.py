"""``--train``: ``corpus_files_per_s`` (reading a corpus, cold cache and warm) and
``train_tokens_per_s`` (``train_on_batch`` on the default model and training settings)."""

from __future__ import annotations

import os
import tempfile
import time
from typing import TYPE_CHECKING

from bench.figures import Plan, Result, log

if TYPE_CHECKING:
    from train.corpus import Corpus


def measure_train(plan: Plan, corpus: str, res: Result, quiet: bool, vocab_size: int = 0) -> None:
    """Files per second reading a corpus cold (fresh cache) and warm, and training tokens/s
    (with the output layer of ``vocab_size`` tokens, the live model's, when it is larger
    than the small corpus's own vocabulary: the softmax over it is part of the cost)."""
    from train.corpus import load_corpus, resolve

    files = [str(p) for p in resolve(corpus)][: plan.train_files]
    old = os.environ.get("COMPANION_CACHE")
    with tempfile.TemporaryDirectory(prefix="companion-bench-cache-") as cache:
        os.environ["COMPANION_CACHE"] = cache
        try:
            log(f"bench: reading {len(files)} files of {corpus}, cold then warm", quiet)
            t0 = time.perf_counter()
            cold = load_corpus(files, progress=False)
            t1 = time.perf_counter()
            warm = load_corpus(files, progress=False)
            t2 = time.perf_counter()
        finally:
            if old is None:
                os.environ.pop("COMPANION_CACHE", None)
            else:
                os.environ["COMPANION_CACHE"] = old
    res.set("corpus_files_per_s",
            {"cold": round(len(files) / (t1 - t0), 1), "warm": round(len(files) / (t2 - t1), 1)},
            f"{len(files)} files of {corpus}, {os.cpu_count()} workers; "
            f"warm: {warm.cached} from cache")

    try:
        import importlib.util

        if not importlib.util.find_spec("tensorflow"):
            res.set("train_tokens_per_s", None, "TensorFlow is not installed")
            return
        res.set("train_tokens_per_s", *_train_throughput(cold, plan, quiet, vocab_size))
    except Exception as e:
        res.set("train_tokens_per_s", None, f"training failed: {type(e).__name__}: {e}"[:200])


def _train_throughput(corpus: Corpus, plan: Plan, quiet: bool,
                      vocab_size: int) -> tuple[float, str]:
    """Tokens per second of ``train_on_batch`` on the default model and training settings,
    over the training pipeline's batches (length buckets)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from companion.encoding.curves import Vocabulary
    from train.dataset import BAR_HIDDEN, encode, melody_curves, tf_dataset, windows
    from train.model import ModelConfig, build, compile_model
    from train.train import parse_args

    defaults = parse_args(["--corpus", "x", "--out", "x"])
    melodies = [m for m in corpus.melodies if len(m) >= 2]
    curves = [melody_curves(m) for m in melodies]
    vocab = Vocabulary.build(curves)
    x, y, w, p = windows(encode(curves, vocab), defaults.window,
                         [m.positions() for m in melodies])
    batch = defaults.batch
    batches = iter(tf_dataset(x, y, w, batch, shuffle=True, seed=0, per_token=True,
                              positions=p, bar_hidden=BAR_HIDDEN).repeat())
    keras.utils.set_random_seed(0)
    v = max(vocab.size, vocab_size)
    model = build(ModelConfig(v, defaults.embed, defaults.units, defaults.layers,
                              defaults.dropout, defaults.position_embed))
    compile_model(model, defaults.lr)
    log(f"bench: training {plan.train_batches} batches of {batch} windows", quiet)
    for _ in range(2):  # tracing
        bx, by, bw = next(batches)
        model.train_on_batch(bx, by, sample_weight=bw)
    tokens = 0.0
    t0 = time.perf_counter()
    for _ in range(plan.train_batches):
        bx, by, bw = next(batches)
        model.train_on_batch(bx, by, sample_weight=bw)
        tokens += float((bw.numpy() > 0).sum())
    dt = time.perf_counter() - t0
    note = (f"{plan.train_batches} batches of {batch} windows of up to {defaults.window} "
            f"tokens in length buckets, {defaults.layers}x{defaults.units} LSTM, V={v}; real "
            f"tokens (no padding)")
    return round(tokens / dt), note

