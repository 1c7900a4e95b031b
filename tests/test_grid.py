"""Quantizing answers with the performer's swing: the grid mask, swing placement, and
answers of the engine on the grid (the goal: every answer onset on it)."""

from __future__ import annotations

import numpy as np
import pytest
from support import EngineRig, make_config, tunes

from companion.engine.grid import Grid, estimate_swing


def test_mask_keeps_the_curves_that_land_on_the_grid():
    td = np.array([0.25, 0.5, 1.0, 1 / 3, 0.75, 1.5, 0.0])
    g = Grid("1/8", td, swing=0.5)
    everything = np.ones(len(td), dtype=bool)
    assert g.mask(0.0, everything).tolist() == [False, True, True, False, False, True, True]
    assert g.mask(0.5, everything).tolist() == [False, True, True, False, False, True, True]
    # none lands: the nearest do
    only = np.array([True, False, False, True, False, False, False])
    assert g.mask(0.0, only).tolist() == [False, False, False, True, False, False, False]
    t = Grid("1/8T", td, swing=0.5)
    assert t.mask(0.0, everything).tolist() == [False, False, True, True, False, False, True]


def test_swing_places_the_off_beat_eighth():
    g = Grid("1/8", np.zeros(1), swing=2 / 3)
    assert g.place(0.0) == 0.0 and g.place(1.0) == 1.0
    assert g.place(2.5) == pytest.approx(2 + 2 / 3)
    assert g.place(0.25) == pytest.approx(1 / 3)  # sixteenths in proportion
    assert g.place(0.75) == pytest.approx(2 / 3 + 1 / 6)
    assert Grid("1/8T", np.zeros(1), swing=2 / 3).place(0.5) == 0.5  # triplets: as written


def test_swing_is_measured_in_the_call():
    straight = [0, 0.5, 1, 1.5, 2, 2.52, 3]
    assert estimate_swing(straight) == 0.5
    swung = [0, 0.66, 1, 1.68, 2, 2.64, 3, 4]
    assert estimate_swing(swung) == pytest.approx(0.66, abs=0.01)
    assert estimate_swing([0, 1, 2, 3]) is None  # no off-beat eighths: nothing to say
    assert estimate_swing([0, 0.9, 1.9, 2.66, 3.0]) is None  # one is not enough
    assert estimate_swing([-0.02, 0.7, 0.98, 1.72]) == pytest.approx(0.71, abs=0.01)
    g = Grid("1/8", np.zeros(1))
    g.hear(swung)
    assert g.ratio == pytest.approx(0.66, abs=0.01)
    g.hear([0, 1, 2])  # no evidence: the ratio stays
    assert g.ratio == pytest.approx(0.66, abs=0.01)


TEMPO = 120.0
BEAT = 60.0 / TEMPO


def answer_to(model, model_pkg, call, quantize, swing="auto", seed=0, temperature=1.5):
    cfg = make_config(model_pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1.0},
                      answer={"length": 8, "max_beats": 8, "temperature": temperature,
                              "top_p": 1.0},
                      time={"quantize": quantize, "swing": swing})
    rig = EngineRig(model, cfg, seed)
    rig.play(call)
    answer = rig.poll(rig.engine.next_deadline())
    return rig.engine, answer


def on_grid(answer, grid: Grid) -> list[float]:
    """The onsets (beats from the answer's start) that are off the played grid."""
    points = np.array(grid.points(answer.beats + 1))
    off = []
    for n in answer.notes:
        b = (n.start - answer.start) / BEAT
        if np.abs(points - b).min() > 1e-6:
            off.append(b)
    return off


def calls(n: int) -> list[list[tuple[int, float, float]]]:
    """Calls cut from ``n`` real tunes outside the vocabulary (their first 8 notes), as
    (pitch, start, duration)."""
    out = []
    for m in tunes(5, n):
        s0 = m.onsets[0]
        out.append([(int(p), float(s - s0), float(d) * 0.9)
                    for p, s, d in zip(m.pitches[:8], m.onsets[:8], m.durations[:8],
                                       strict=True)])
    return out


@pytest.mark.parametrize("quantize", ["1/8", "1/16", "1/8T", "1/4"])
def test_quantized_answers_are_all_on_the_grid(model, model_pkg, quantize):
    total = 0
    for i, call in enumerate(calls(8)):
        for seed in range(3):
            engine, answer = answer_to(model, model_pkg, call, quantize, seed=10 * i + seed)
            assert answer.notes
            assert on_grid(answer, engine.grid) == []
            starts = [n.start for n in answer.notes]
            assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
            total += len(answer.notes)
    assert total > 50


def test_quantized_answers_keep_the_performers_swing(model, model_pkg):
    swung = [(60, 0, 0.6), (62, 0.67, 0.3), (64, 1, 0.6), (65, 1.67, 0.3), (67, 2, 0.6),
             (65, 2.67, 0.3), (64, 3, 0.9)]
    seen_offbeat = False
    for seed in range(6):
        engine, answer = answer_to(model, model_pkg, swung, "1/8", seed=seed)
        assert engine.grid.ratio == pytest.approx(0.67, abs=0.01)
        assert on_grid(answer, engine.grid) == []
        fracs = [((n.start - answer.start) / BEAT) % 1 for n in answer.notes]
        assert all(f == pytest.approx(0, abs=1e-6) or f == pytest.approx(0.67, abs=0.011)
                   or f == pytest.approx(1, abs=1e-6) for f in fracs), fracs
        seen_offbeat |= any(abs(f - 0.67) < 0.011 for f in fracs)
    assert seen_offbeat
    # a fixed ratio overrides the performer's
    engine, _ = answer_to(model, model_pkg, swung, "1/8", swing=0.5)
    assert engine.grid.ratio == 0.5


def test_quantize_off_is_the_plain_engine(model, model_pkg):
    e1, a1 = answer_to(model, model_pkg, calls(1)[0], "off", seed=5)
    assert e1.grid is None
    cfg_plain = make_config(model_pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1.0},
                            answer={"length": 8, "max_beats": 8, "temperature": 1.5,
                                    "top_p": 1.0})
    rig = EngineRig(model, cfg_plain, 5)
    rig.play(calls(1)[0])
    a2 = rig.poll(rig.engine.next_deadline())
    assert [(n.pitch, n.start) for n in a1.notes] == [(n.pitch, n.start) for n in a2.notes]
