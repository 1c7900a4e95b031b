"""Answers that stay in the call's register (answer.register_pull): each curve's score loses
``register_pull`` nats per octave it takes the melody from the call's mean pitch."""

from __future__ import annotations

import numpy as np
from support import EngineRig, make_config

CALL = [(67, 0, 1), (71, 1, 0.5), (74, 1.5, 0.5), (72, 2, 1), (71, 3, 1), (69, 4, 0.5),
        (67, 4.5, 0.5), (66, 5, 1), (67, 6, 2)]
CENTRE = float(np.mean([p for p, _, _ in CALL]))


def away(model, model_pkg, pull: float, seeds: range) -> float:
    """The answers' mean distance (semitones) from the call's mean pitch."""
    c = make_config(model_pkg, listen={"tempo_bpm": 120.0, "phrase_end_beats": 1.5},
                    answer={"register_pull": pull, "temperature": 1.5, "top_p": 1.0,
                            "range_widen": 24, "length": 16, "min_beats": 16})
    dist = []
    for seed in seeds:
        rig = EngineRig(model, c, seed)
        rig.play(CALL)
        _, answer = rig.finish()
        dist.extend(abs(n.pitch - CENTRE) for n in answer.notes)
    return float(np.mean(dist))


def test_a_pull_keeps_answers_nearer_the_calls_register(model, model_pkg):
    free = away(model, model_pkg, 0.0, range(20))
    pulled = away(model, model_pkg, 8.0, range(20))
    print(f"mean distance from the call's mean pitch: {free:.2f} free, {pulled:.2f} pulled")
    assert pulled < 0.75 * free
