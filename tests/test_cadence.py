"""Answers that end as phrases end (answer.cadence): the last note on a beat a beat or more
before the answer's end, held at least a beat, on the key's tonic, third or fifth."""

from __future__ import annotations

import numpy as np
import pytest
from support import EngineRig, make_config

from companion.config import ConfigError
from companion.encoding.curves import Vocabulary
from companion.encoding.key import STABLE, KeyBias
from companion.encoding.names import parse_key
from companion.engine.sampler import Sampler

TEMPO = 120.0
KEY = "G major"
# a call of 8 beats in G major: quarters and eighths
CALL = [(67, 0, 1), (71, 1, 0.5), (74, 1.5, 0.5), (72, 2, 1), (71, 3, 1), (69, 4, 0.5),
        (67, 4.5, 0.5), (66, 5, 1), (67, 6, 2)]


def cfg(model_pkg, cadence: float, **time):
    return make_config(model_pkg, listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1.5},
                       answer={"cadence": cadence, "temperature": 1.5, "top_p": 1.0},
                       key={"fixed": KEY}, time=time)


def answer_of(model, c, seed: int):
    rig = EngineRig(model, c, seed)
    rig.play(CALL)
    _, answer = rig.finish()
    return answer, rig.beat


def ending(answer, beat: float) -> tuple[float, float, int]:
    """The last note: onset in beats from the answer's start, length in beats, pitch."""
    last = answer.notes[-1]
    return (last.start - answer.start) / beat, last.duration / beat, last.pitch


def test_every_answer_ends_on_a_beat_held_on_a_stable_degree(model, model_pkg):
    tonic, mode = parse_key(KEY)
    for seed in range(30):
        answer, beat = answer_of(model, cfg(model_pkg, 1.0), seed)
        at, held, pitch = ending(answer, beat)
        assert at == pytest.approx(np.floor(answer.beats - 1.0)), (seed, at, answer.beats)
        assert held >= 1.0 - 1e-9, (seed, held)
        assert (pitch - tonic) % 12 in STABLE[mode], (seed, pitch)
        onsets = [(n.start - answer.start) / beat for n in answer.notes]
        assert all(o < at + 1e-9 for o in onsets)


def test_an_ending_keeps_the_answer_moving_until_it(model, model_pkg):
    """The walk to the last onset is the model's own: as many notes as without an ending."""
    with_end = [len(answer_of(model, cfg(model_pkg, 1.0), seed)[0].notes) for seed in range(30)]
    without = [len(answer_of(model, cfg(model_pkg, 0.0), seed)[0].notes) for seed in range(30)]
    assert sum(with_end) >= 0.8 * sum(without), (with_end, without)


def test_without_cadence_answers_stop_where_their_beats_run_out(model, model_pkg):
    """Today's behaviour at 0: some answers end off the beat or short, and none is cut
    before its beats are used up."""
    tonic, mode = parse_key(KEY)
    phrase_like = 0
    for seed in range(30):
        answer, beat = answer_of(model, cfg(model_pkg, 0.0), seed)
        at, held, pitch = ending(answer, beat)
        assert at > answer.beats - 2.0 - 1e-9 or len(answer.notes) == 1
        phrase_like += (abs(at - round(at)) < 1e-9 and held >= 1.0
                        and (pitch - tonic) % 12 in STABLE[mode])
    assert phrase_like < 25


def test_a_share_of_the_answers_end_as_phrases(model, model_pkg):
    """cadence 0.5: both kinds of answer come, by the seed."""
    kinds = set()
    for seed in range(16):
        answer, beat = answer_of(model, cfg(model_pkg, 0.5), seed)
        at, held, _ = ending(answer, beat)
        kinds.add(at == pytest.approx(np.floor(answer.beats - 1.0)) and held >= 1.0)
    assert kinds == {True, False}


def test_quantized_answers_end_on_the_beat_too(model, model_pkg):
    for seed in range(10):
        answer, beat = answer_of(model, cfg(model_pkg, 1.0, quantize="1/8", swing=0.6), seed)
        at, held, _ = ending(answer, beat)
        assert at == pytest.approx(np.floor(answer.beats - 1.0))
        assert held >= 1.0 - 1e-9


def test_cadence_is_a_live_setting_checked_as_in_the_file(model, model_pkg):
    rig = EngineRig(model, cfg(model_pkg, 1.0))
    assert rig.engine.set("answer.cadence", 0) == 0.0
    with pytest.raises(ConfigError, match="answer.cadence"):
        rig.engine.set("answer.cadence", 1.5)
    assert rig.engine.setting("answer.cadence") == 0.0
    with pytest.raises(ConfigError, match="answer.cadence"):
        make_config(model_pkg, answer={"cadence": -0.1})


def sampler_of(curves: list[tuple[int, float]]) -> Sampler:
    vocab = Vocabulary(np.array(curves, dtype=np.float64), {"bos": len(curves)})
    return Sampler(vocab, np.random.default_rng(0), 1.0, 1.0)


def test_ending_keeps_onsets_within_the_last_and_lands_there_on_a_rest():
    # curves (pitch, beats); from C in C major the rests are C, E and G
    s = sampler_of([(0, 0.5), (2, 1.0), (4, 1.0), (7, 2.0), (5, 1.0)])
    every = np.array([True] * 5 + [False])
    bias = KeyBias(s.pitch_diff, s.playable, 0.5)
    assert bias.resting(60) is None  # no key yet
    bias.key = parse_key("C major")
    rest = bias.resting(60)
    assert rest.tolist() == [True, False, True, True, False, False]
    # short of the last onset, or reaching it (onto it, or past and played onto it) on a rest
    assert s.ending(every, 1.0, rest).tolist() == [True, False, True, True, False, False]
    assert s.landing.tolist() == [False, False, True, True, False, False]
    # none that reaches it rests: the walk goes on short of it
    only = np.array([True, True, False, False, True, False])
    assert s.ending(only, 1.0, rest).tolist() == [True, False, False, False, False, False]
    assert not s.landing.any()
    # none short of it either: any curve that reaches it lands
    none = np.array([False, True, False, False, True, False])
    assert s.ending(none, 1.0, rest).tolist() == none.tolist()
    assert s.landing.tolist() == none.tolist()
    bias.strength = 0.0  # the key changes nothing at strength 0: no rests
    assert bias.resting(60) is None
    # without a key: any curve
    assert s.ending(every, 1.0, None).tolist() == every.tolist()
    assert s.landing.tolist() == [False, True, True, True, True, False]
