"""Musicianship figures on held-out calls: `python -m bench.musicianship [--json]`.

Calls are cut from tunes the model never trained on (the Nottingham melodies; the default
model trained on O'Neill's 1850 and Ryan's Mammoth): the first ``--beats`` quarter notes
of each tune's melody. Each call is answered by `companion respond`'s engine on the
virtual clock, with key awareness on (the config's strength, or 1 if that is 0) and off
(strength 0), same seed. Figures:

- ``in_key_on`` / ``in_key_off``: share of answer notes on a scale tone of the key the
  engine estimated from the call (goal with key awareness on: >= 0.95);
- ``degenerate``: answers of 3 notes or more whose curves are all one (goal: 0);
- ``in_range``: share of answers whose pitches all lie within the call's range widened
  by an octave (goal: 1.0).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.data import ORIGIN, nottingham_dir
from companion import config as config_mod
from companion.commands.respond import Response, respond
from companion.config import Config, ConfigError
from companion.encoding.key import in_scale
from companion.encoding.names import parse_key
from companion.encoding.phrases import Phrase, PhraseNote, read_call
from companion.engine.model import ModelError, StepModel

GOAL_IN_KEY = 0.95
OCTAVE = 12


def cut_call(phrase: Phrase, beats: float) -> Phrase | None:
    """The notes starting in the first ``beats`` quarter notes (from the first onset),
    clipped to end there; None if fewer than 4 notes."""
    if not phrase.notes:
        return None
    t0 = phrase.notes[0].start
    notes = [PhraseNote(n.pitch, n.start - t0, min(n.duration, t0 + beats - n.start),
                        n.velocity) for n in phrase.notes if n.start - t0 < beats]
    notes = [n for n in notes if n.duration > 0]
    return Phrase(phrase.name, notes) if len(notes) >= 4 else None


def held_out_calls(n: int, beats: float = 8.0, folder: Path | None = None) -> list[Phrase]:
    """``n`` calls from tunes spread evenly over ``folder`` (default: bench.data's Nottingham
    folder), sorted, deterministic."""
    folder = nottingham_dir() if folder is None else folder
    files = sorted(folder.glob("*.mid"))
    if not files:
        raise FileNotFoundError(f"{folder}: no MIDI files")
    step = max(1, len(files) // n)
    calls: list[Phrase] = []
    for f in files[::step]:
        c = cut_call(read_call(f), beats)
        if c is not None:
            calls.append(c)
        if len(calls) == n:
            break
    return calls


def degenerate(tokens: list[int] | None) -> bool:
    """One curve repeated through a whole answer (of 3 notes or more)."""
    return tokens is not None and len(tokens) >= 3 and len(set(tokens)) == 1


@dataclass
class Figures:
    calls: int
    notes_on: int
    in_key_on: float
    in_key_off: float
    degenerate_on: int
    degenerate_off: int
    in_range_on: float
    in_range_off: float
    strength_on: float

    def goals_met(self) -> bool:
        return (self.in_key_on >= GOAL_IN_KEY and self.degenerate_on == 0
                and self.in_range_on == 1.0)


def _in_key(r: Response) -> tuple[int, int]:
    if r.key is None or not r.answer:
        return 0, len(r.answer)
    tonic, mode = parse_key(r.key)
    return int(in_scale([n.pitch for n in r.answer], tonic, mode).sum()), len(r.answer)


def _in_range(r: Response) -> bool:
    lo = min(n.pitch for n in r.call.notes) - OCTAVE
    hi = max(n.pitch for n in r.call.notes) + OCTAVE
    return all(lo <= n.pitch <= hi for n in r.answer)


def measure(cfg: Config, model: StepModel, calls: list[Phrase], seed: int = 0) -> Figures:
    on = copy.deepcopy(cfg)
    on.key.strength = cfg.key.strength or 1.0
    off = copy.deepcopy(cfg)
    off.key.strength = 0.0
    out: dict[str, list] = {"on": [0, 0, 0, 0], "off": [0, 0, 0, 0]}  # in key, notes, deg, rng
    for i, call in enumerate(calls):
        for name, c in (("on", on), ("off", off)):
            r = respond(c, model, call, seed + i)
            k, n = _in_key(r)
            acc = out[name]
            acc[0] += k
            acc[1] += n
            acc[2] += degenerate(r.tokens)
            acc[3] += _in_range(r)
    n_calls = max(len(calls), 1)
    return Figures(
        calls=len(calls), notes_on=out["on"][1],
        in_key_on=out["on"][0] / max(out["on"][1], 1),
        in_key_off=out["off"][0] / max(out["off"][1], 1),
        degenerate_on=out["on"][2], degenerate_off=out["off"][2],
        in_range_on=out["on"][3] / n_calls, in_range_off=out["off"][3] / n_calls,
        strength_on=on.key.strength,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.musicianship", description=__doc__.split(
        "\n")[0])
    p.add_argument("--config", metavar="F", help="config file (default: ./config.yaml)")
    p.add_argument("--model", metavar="DIR", help="model package (default: the config's)")
    p.add_argument("--calls", type=int, default=80, help="number of held-out calls")
    p.add_argument("--beats", type=float, default=8.0, help="length of each call, in beats")
    p.add_argument("--data", default=str(nottingham_dir()),
                   help="folder of held-out MIDI tunes (default: $NOTTINGHAM_DIR, bench.data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
        if args.model:
            config_mod.override(cfg, "model", str(Path(args.model).resolve()))
        model = StepModel(cfg.model_dir())
        calls = held_out_calls(args.calls, args.beats, Path(args.data))
    except (ConfigError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e} ({ORIGIN})", file=sys.stderr)
        return 2
    f = measure(cfg, model, calls, args.seed)
    if args.json:
        print(json.dumps({**f.__dict__, "model": str(cfg.model_dir()), "goals_met": f.goals_met()}))
    else:
        print(f"{f.calls} held-out calls ({args.beats:g} beats each, {args.data}), model "
              f"{cfg.model_dir()}")
        print(f"answer notes in the estimated key: {f.in_key_on:.1%} with key awareness "
              f"(strength {f.strength_on:g}), {f.in_key_off:.1%} without (goal >= 95%)")
        print(f"degenerate answers (one curve throughout): {f.degenerate_on} with, "
              f"{f.degenerate_off} without (goal: none)")
        print(f"answers within the call's range +- an octave: {f.in_range_on:.0%} with, "
              f"{f.in_range_off:.0%} without (goal: all)")
    return 0 if f.goals_met() else 1


if __name__ == "__main__":
    sys.exit(main())
