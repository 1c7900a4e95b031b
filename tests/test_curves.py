"""The curve encoding and the vocabulary: what both training and the live companion rely on."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from companion.encoding.curves import (
    TIME_GRID,
    Vocabulary,
    curve,
    curves_from_notes,
    snap_time,
)


def test_curves_are_pitch_and_onset_differences():
    c = curves_from_notes([60, 62, 59, 59], [0.0, 1.0, 1.5, 3.0])
    assert c.tolist() == [[2, 1.0], [-3, 0.5], [0, 1.5]]


def test_single_note_has_no_curve():
    assert curves_from_notes([60], [0.0]).shape == (0, 2)


def test_triplet_near_duplicates_snap_to_one_value():
    # MIDI read on a 1/1024 grid gives 0.3330078125 and 0.333984375 for one triplet eighth
    a = curves_from_notes([60, 62], [0.0, 0.3330078125])
    b = curves_from_notes([60, 62], [0.0, 0.333984375])
    assert a[0, 1] == b[0, 1] == pytest.approx(1 / 3, abs=1e-9)


def test_onsets_snap_absolutely_so_rounding_does_not_accumulate():
    onsets = np.cumsum([0.0] + [1 / 3 + 1e-3] * 30)
    c = curves_from_notes([60] * 31, onsets)
    assert abs(c[:, 1].sum() - float(snap_time(onsets[-1]))) < 1e-9


def test_live_curve_matches_batch_encoding():
    ps, ts = [60, 64, 67, 65], [0.0, 0.52, 0.98, 2.01]
    batch = curves_from_notes(ps, ts)
    live = [curve(ps[i], ts[i], ps[i + 1], ts[i + 1]) for i in range(3)]
    assert [tuple(x) for x in batch.tolist()] == [(p, t) for p, t in live]


def _vocab():
    return Vocabulary(np.array([[-2, 0.5], [0, 1.0], [2, 0.5], [2, 1.0], [5, 2.0], [12, 0.5]]))


def test_specials_come_after_curves():
    v = _vocab()
    assert v.bos == 6 and v.size == 7


def test_known_curve_maps_to_itself():
    v = _vocab()
    for i, (p, t) in enumerate(v.curves):
        assert v.token(int(p), float(t)) == i
    assert v.nearest(v.curves).tolist() == list(range(len(v.curves)))


def test_nearest_keeps_the_interval_and_takes_the_closest_duration_ratio():
    v = _vocab()
    # +2 played a little late: still +2, the 0.5 duration is closer in ratio than 1.0
    assert v.curves[v.token(2, 0.6)].tolist() == [2, 0.5]
    assert v.curves[v.token(2, 0.8)].tolist() == [2, 1.0]
    # timing far off but the interval exists: the interval wins
    assert v.curves[v.token(5, 0.25)].tolist() == [5, 2.0]
    # an interval not in the vocabulary: the nearest interval
    assert v.curves[v.token(11, 0.5)][0] == 12


def test_nearest_is_vectorised_and_matches_one_by_one():
    v = _vocab()
    rng = np.random.default_rng(0)
    c = np.stack([rng.integers(-15, 15, 200), rng.uniform(0.05, 5, 200)], 1)
    assert v.nearest(c).tolist() == [v.token(int(p), float(t)) for p, t in c]


@given(st.integers(-40, 40), st.floats(0, 64, allow_nan=False))
def test_every_curve_gets_a_real_curve_token(p, t):
    v = _vocab()
    tok = v.token(p, t)
    assert 0 <= tok < len(v.curves)


def test_vocabulary_from_songs_is_unique_and_sorted():
    songs = [curves_from_notes([60, 62, 60, 62], [0, 0.5, 1, 1.5]),
             curves_from_notes([50, 52, 55], [0, 0.5, 1.5])]
    v = Vocabulary.build(songs)
    assert v.curves.tolist() == [[-2, 0.5], [2, 0.5], [3, 1.0]]


def test_encode_starts_with_bos():
    v = _vocab()
    toks = v.encode(np.array([[2, 0.5], [0, 1.0]]))
    assert toks.tolist() == [v.bos, 2, 1]


def test_json_round_trip_and_contract_format(tmp_path):
    v = _vocab()
    v.save(tmp_path / "vocab.json")
    data = json.loads((tmp_path / "vocab.json").read_text())
    assert data["format"] == 1 and data["time_unit"] == "quarter"
    assert data["specials"] == {"bos": 6}
    w = Vocabulary.load(tmp_path / "vocab.json")
    assert np.array_equal(w.curves, v.curves) and w.specials == v.specials


@pytest.mark.parametrize("bad, what", [
    ({"format": 3}, "format"),
    ({"format": 1, "time_unit": "quarter", "curves": [], "specials": {"bos": 0}}, "curves"),
    ({"format": 1, "time_unit": "quarter", "curves": [[0, 1.0]], "specials": {}}, "specials"),
    ({"format": 1, "time_unit": "quarter", "curves": [[0, 1.0]], "specials": {"bos": 0}},
     "indexes"),
])
def test_broken_vocab_is_a_clear_error(tmp_path, bad, what):
    p = tmp_path / "vocab.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=what):
        Vocabulary.load(p)


def test_grid_holds_common_durations():
    for d in (1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1, 1.5):
        assert snap_time(d) * TIME_GRID == pytest.approx(round(d * TIME_GRID))
        assert snap_time(d) == pytest.approx(d)
