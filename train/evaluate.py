"""`python -m train.evaluate`: held-out figures of a model package beside n-gram baselines.

An LSTM's cross-entropy means little alone: the n-gram baselines, trained on the very
songs the LSTM trained on, say how much of it is context the LSTM learned. All figures
use one definition: every token after ``bos`` is predicted from its history, in nats.

Held-out songs: with the package's own training corpora, the test split recorded in the
card (same seed and fractions as training); with any other corpus, all of its melodies.
A model that takes metrical positions (format 2) is fed each note's (``Melody.positions``):
its figures are with the bar as the score has it, and again with every bar hidden.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from companion.encoding import meter
from companion.encoding.curves import Vocabulary
from companion.encoding.melody import Melody
from companion.engine.model import ModelError, StepModel
from train.corpus import CorpusError, load_corpus, resolve
from train.dataset import encode, melody_curves, prepare
from train.ngram import KneserNey, Unigram, score

log = logging.getLogger("train.evaluate")

BASELINES = {"unigram": "unigram", "kn2": "KN 2-gram", "kn3": "KN 3-gram", "kn5": "KN 5-gram"}


def _fixed_batch(step_model) -> int | None:
    """The batch size baked into the ONNX graph, or None when it is dynamic."""
    session = getattr(step_model, "session", None)
    if session is None:
        return None
    for i in session.get_inputs():
        if i.name == "h" and len(i.shape) == 3 and isinstance(i.shape[1], int):
            return int(i.shape[1])
    return None


def lstm_score(step_model, seqs: Sequence[np.ndarray], batch: int = 64,
               positions: Sequence[np.ndarray] | None = None) -> dict:
    """The step model's nll/ppl/top1 over ``seqs``, many songs stepping together; a model
    that takes positions (``positional``) is fed ``positions`` (parallel to ``seqs``).

    Each of ``batch`` slots runs one song from a zero state; a finished slot takes the next
    song (longest first) with its state reset, and slots left without a song are dropped,
    so no step is spent on padding. Same definition as ``train.ngram.score``.
    """
    if positions is not None and [len(p) for p in positions] != [len(s) for s in seqs]:
        raise ValueError("lstm_score: positions must be parallel to the token sequences")
    positional = positions is not None and getattr(step_model, "positional", False)
    keep = [i for i, s in enumerate(seqs) if len(s) >= 2]
    songs = [np.asarray(seqs[i], np.int64) for i in keep]
    if not songs:
        raise ValueError("nothing to score: no sequence has a token after bos")
    lens = np.array([len(s) for s in songs], np.int64)
    flat = np.concatenate(songs)
    flat_pos = np.concatenate([np.asarray(positions[i], np.int64) for i in keep]) \
        if positional else None
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    queue = list(np.argsort(-lens, kind="stable"))[::-1]  # pop() takes the longest first
    fixed = _fixed_batch(step_model)
    B = fixed or max(1, min(batch, len(songs)))
    st = step_model.zero_state(B)
    h, c = st.h, st.c
    song = np.full(B, -1, np.int64)
    pos = np.zeros(B, np.int64)
    for b in range(B):
        if queue:
            song[b] = queue.pop()
    lp_parts, hit_parts = [], []
    while (song >= 0).any():
        live = song >= 0
        at = np.where(live, starts[np.maximum(song, 0)] + pos, 0)
        tokens = np.where(live, flat[at], 0)
        if flat_pos is None:
            logits, h, c = step_model.run_batch(tokens, h, c)
        else:
            logits, h, c = step_model.run_batch(tokens, h, c,
                                                positions=np.where(live, flat_pos[at], 0))
        rows = np.flatnonzero(live)
        lg = np.asarray(logits, np.float64)[rows]
        target = flat[at[rows] + 1]
        m = lg.max(axis=1)
        lse = m + np.log(np.exp(lg - m[:, None]).sum(axis=1))
        lp_parts.append(lg[np.arange(len(rows)), target] - lse)
        hit_parts.append(np.argmax(lg, axis=1) == target)
        pos[rows] += 1
        done = rows[pos[rows] + 1 >= lens[song[rows]]]
        if len(done):
            h, c = np.array(h), np.array(c)  # writable copies: finished slots restart at zero
        for b in done:
            song[b] = queue.pop() if queue else -1
            pos[b] = 0
            h[:, b] = 0.0
            c[:, b] = 0.0
        if fixed is None and (song < 0).any():
            keep = song >= 0
            song, pos, h, c = song[keep], pos[keep], h[:, keep], c[:, keep]
    lp = np.concatenate(lp_parts)
    nll = float(-lp.mean())
    return {"nll": nll, "ppl": float(math.exp(nll)),
            "top1": float(np.concatenate(hit_parts).mean()), "tokens": int(len(lp))}


def baselines(train_seqs: Sequence[np.ndarray], test_seqs: Sequence[np.ndarray], V: int) -> dict:
    """Unigram and Kneser-Ney 2/3/5-gram scores on ``test_seqs``, trained on ``train_seqs``."""
    models = {
        "unigram": Unigram(V),
        "kn2": KneserNey(2, V),
        "kn3": KneserNey(3, V),
        "kn5": KneserNey(5, V),
    }
    out = {}
    for name, m in models.items():
        t = time.time()
        m.fit(train_seqs)
        out[name] = score(m, test_seqs)
        log.info("  %-8s %.3f nats/token (%.1f s)", name, out[name]["nll"], time.time() - t)
    return out


def figures(step_model, train_seqs: Sequence[np.ndarray], test_seqs: Sequence[np.ndarray],
            test_positions: Sequence[np.ndarray] | None = None) -> dict:
    """LSTM and baseline scores on ``test_seqs``, and how far the LSTM is below the best;
    a model that takes positions is fed ``test_positions`` (``lstm``), and the same with
    every bar hidden (``lstm_bar_hidden``)."""
    t = time.time()
    lstm = lstm_score(step_model, test_seqs, positions=test_positions)
    log.info("  LSTM     %.3f nats/token (%.1f s)", lstm["nll"], time.time() - t)
    hidden = {}
    if test_positions is not None and getattr(step_model, "positional", False):
        hidden["lstm_bar_hidden"] = lstm_score(
            step_model, test_seqs, positions=[meter.hide_bar(p) for p in test_positions])
        log.info("  LSTM     %.3f nats/token, bars hidden", hidden["lstm_bar_hidden"]["nll"])
    base = baselines(train_seqs, test_seqs, step_model.vocab.size)
    best = min(base, key=lambda k: base[k]["nll"])
    return {
        "lstm": lstm,
        **hidden,
        "baselines": base,
        "best_baseline": best,
        "lstm_vs_best_pct": 100.0 * (base[best]["nll"] - lstm["nll"]) / base[best]["nll"],
    }


def _sequences(melodies: Sequence[Melody], vocab: Vocabulary) -> list[np.ndarray]:
    """Token sequences of the melodies with at least one curve."""
    return encode([melody_curves(m) for m in melodies if len(m) >= 2], vocab)


def _spec_key(spec: str) -> str:
    if spec.startswith("music21:"):
        return spec
    return os.path.normcase(os.path.abspath(spec))


def _card_setup(step: StepModel) -> tuple[list[str], dict]:
    where = step.dir / "card.json"
    card = step.card or {}
    corpora = card.get("corpora")
    split = card.get("split")
    if not isinstance(corpora, list) or not corpora or not all(isinstance(s, str) for s in corpora):
        raise ModelError(f"{where}: expected \"corpora\": a non-empty list of corpus SPECs")
    keys = ("seed", "val_frac", "test_frac")
    if not isinstance(split, dict) or not all(k in split for k in keys):
        raise ModelError(f"{where}: expected \"split\": {{\"seed\", \"val_frac\", \"test_frac\"}}")
    return corpora, split


@dataclass
class HeldOut:
    """Held-out songs of a package and the training split its baselines learn from."""

    kind: str  # "test split" or "whole corpus"
    train: list[np.ndarray]  # token sequences of the card's training split
    test: list[np.ndarray]  # token sequences of the held-out songs
    melodies: list[Melody]  # the melody of each of ``test``

    def positions(self) -> list[np.ndarray]:
        """The metrical positions of each of ``test``, parallel to its tokens."""
        return [m.positions() for m in self.melodies]


def held_out_data(step: StepModel, specs: Sequence[str], workers: int | None = None,
                  use_cache: bool = True, progress: bool = True) -> HeldOut:
    """The card's test split when ``specs`` are its corpora, else all of their melodies;
    every song encoded with the package's vocabulary."""
    corpora, split_cfg = _card_setup(step)
    specs = list(specs)
    same = {_spec_key(s) for s in specs} == {_spec_key(s) for s in corpora}
    if not same:
        for s in specs:  # a bad SPEC fails before the training corpora are read
            resolve(s)
    log.info("reading training corpora %s", " ".join(corpora))
    corpus = load_corpus(corpora, workers=workers, use_cache=use_cache, progress=progress)
    songs = prepare(corpus.melodies, int(split_cfg["seed"]), float(split_cfg["val_frac"]),
                    float(split_cfg["test_frac"]))
    split = songs.split
    seqs = encode(songs.curves, step.vocab)
    train = [seqs[i] for i in split.train]
    if not train:
        raise CorpusError(f"{' '.join(corpora)}: no training melodies with at least two notes")
    if same:
        kind, test = "test split", [seqs[i] for i in split.test]
        melodies = [songs.melodies[i] for i in split.test]
    else:
        log.info("reading held-out corpora %s", " ".join(specs))
        held = load_corpus(specs, workers=workers, use_cache=use_cache, progress=progress)
        melodies = [m for m in held.melodies if len(m) >= 2]
        kind, test = "whole corpus", _sequences(melodies, step.vocab)
        seen = {s.tobytes() for s in train}
        overlap = sum(s.tobytes() in seen for s in test)
        if overlap:
            log.warning("%d of %d held-out songs also occur in the training split", overlap,
                        len(test))
    if not test:
        raise CorpusError(
            f"{' '.join(specs)}: no held-out melodies with at least two notes ({kind})"
        )
    return HeldOut(kind, train, test, melodies)


def held_out(model: str | Path | StepModel, specs: Sequence[str], workers: int | None = None,
             use_cache: bool = True, progress: bool = True) -> dict:
    """Figures on ``specs``: the card's test split when they are its corpora, else all of them.

    Baselines are trained on the card's training split, encoded with the package's vocabulary.
    """
    step = model if isinstance(model, StepModel) else StepModel(model)
    data = held_out_data(step, specs, workers, use_cache, progress)
    log.info("scoring %d held-out songs (%s)", len(data.test), data.kind)
    fig = figures(step, data.train, data.test, data.positions())
    return {"corpus": list(specs), "held_out": data.kind, "songs": len(data.test),
            "tokens": fig["lstm"]["tokens"], **fig}


def format_table(result: dict) -> str:
    """The figures as a plain-text table."""
    lines = [
        f"held out: {result['held_out']} of {' '.join(result['corpus'])}: "
        f"{result['songs']} songs, {result['tokens']} tokens",
        f"{'model':<12}{'nats/token':>12}{'perplexity':>12}{'top-1':>9}",
    ]
    rows = [("LSTM", result["lstm"])]
    if "lstm_bar_hidden" in result:
        rows.append(("LSTM no bar", result["lstm_bar_hidden"]))
    rows += [(BASELINES[k], v) for k, v in result["baselines"].items()]
    for name, s in rows:
        lines.append(f"{name:<12}{s['nll']:>12.3f}{s['ppl']:>12.2f}{s['top1']:>9.1%}")
    best = result["best_baseline"]
    pct = result["lstm_vs_best_pct"]
    lines.append(f"LSTM is {abs(pct):.1f}% {'below' if pct >= 0 else 'above'} the best baseline "
                 f"({BASELINES[best]}) in nats/token")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.evaluate",
                                description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model package folder (models/NAME)")
    p.add_argument("--corpus", nargs="+", required=True, metavar="SPEC",
                   help="held-out corpora: the package's own (its test split) or any other")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--workers", type=int, default=None, help="corpus parsing processes")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    try:
        result = held_out(args.model, args.corpus, workers=args.workers, progress=not args.quiet)
    except (ModelError, CorpusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
