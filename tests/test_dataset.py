"""Training windows and the song split: labels one step ahead, padding without weight, each
window once, whole songs and tune families on one side of the split, duplicates dropped."""

import numpy as np
import pytest

from train.dataset import split_songs, windows


def test_labels_are_the_next_token_one_step_ahead():
    song = np.arange(100, 111)  # bos-like first token, then 10 more
    x, y, w = windows([song], length=4)
    real = w > 0
    # every label is the input's successor in the song
    for xi, yi, ri in zip(x, y, real, strict=True):
        for a, b, r in zip(xi, yi, ri, strict=True):
            if r:
                assert b == a + 1
    # every token after the first is a label exactly once
    assert sorted(y[real].tolist()) == list(range(101, 111))


def test_padding_carries_no_weight_and_no_real_label():
    x, y, w = windows([np.array([7, 8, 9])], length=6)
    assert w.tolist() == [[1, 1, 0, 0, 0, 0]]
    assert y[0, :2].tolist() == [8, 9]
    assert x[0, :2].tolist() == [7, 8]


def test_windows_cover_long_songs_without_overlap():
    song = np.arange(1, 302)
    x, y, w = windows([song], length=128)
    assert x.shape == (3, 128)
    assert int(w.sum()) == len(song) - 1


def test_split_is_deterministic_song_level_and_disjoint():
    names = [f"tune{i}" for i in range(200)]
    a = split_songs(names, seed=3)
    b = split_songs(list(reversed(names)), seed=3)
    rev = list(reversed(names))
    assert {names[i] for i in a.test} == {rev[i] for i in b.test}  # by name, not by position
    assert not set(a.train) & set(a.test) and not set(a.train) & set(a.val)
    assert len(a.train) + len(a.val) + len(a.test) == 200
    assert len(a.test) == 20 and len(a.val) == 10
    c = split_songs(names, seed=4)
    assert set(c.test) != set(a.test)


def test_tune_families_stay_on_one_side_and_duplicates_go():
    from companion.encoding.melody import Melody
    from train.dataset import FAMILY_CURVES, prepare

    rng = np.random.default_rng(0)

    def mel(name, pitches):
        n = len(pitches)
        return Melody(name, np.array(pitches), np.arange(n) * 0.5, np.full(n, 0.5),
                      np.full(n, 80))

    mels = []
    for fam in range(40):
        opening = list(rng.integers(60, 72, FAMILY_CURVES + 1))
        for v in range(3):  # three settings of one tune: same opening, different endings
            mels.append(mel(f"f{fam}v{v}", opening + list(rng.integers(60, 72, 10))))
    mels.append(mel("copy", list(mels[0].pitches)))  # an exact copy is dropped
    songs = prepare(mels, seed=1, val_frac=0.1, test_frac=0.2)
    assert songs.duplicates == 1 and len(songs.curves) == 120
    family = {i: songs.names[i][:-2] for i in range(120)}
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        fa = {family[i] for i in getattr(songs.split, a)}
        fb = {family[i] for i in getattr(songs.split, b)}
        assert not fa & fb, (a, b)
    assert len(songs.split.test) == 24 and len(songs.split.val) == 12


@pytest.mark.tensorflow
def test_batches_hold_each_window_once_cut_to_their_longest():
    from train.dataset import tf_dataset

    rng = np.random.default_rng(3)
    songs = [np.arange(1000 * i, 1000 * i + n) for i, n in enumerate(rng.integers(2, 300, 150))]
    x, y, w = windows(songs, length=128)
    for shuffle in (False, True):
        seen, padded, orders = [], 0, []
        ds = tf_dataset(x, y, w, batch=16, shuffle=shuffle, seed=1)
        for epoch in range(2):
            order = []
            for bx, by, bw in ds:
                bx, by, bw = bx.numpy(), by.numpy(), bw.numpy()
                assert len(bx) <= 16 and bw[:, -1].any()  # no column of padding only
                real = bw > 0
                assert (by[real] == bx[real] + 1).all()  # labels one step ahead, as windowed
                seen += bx[:, 0].tolist() if epoch == 0 else []
                padded += int((~real).sum()) if epoch == 0 else 0
                order.append(bx[0, 0])
            orders.append(order)
        # every window once an epoch, and little padding: batches of one length
        assert sorted(seen) == sorted(x[:, 0].tolist())
        assert padded < 0.1 * w.sum() < 0.1 * x.size
        assert (orders[0] != orders[1]) == shuffle  # reshuffled every epoch


@pytest.mark.tensorflow
def test_per_token_weights_make_every_real_token_weigh_the_same():
    from train.dataset import tf_dataset

    songs = [np.arange(1, n) for n in (5, 6, 40, 41, 120, 121)]
    x, y, w = windows(songs, length=128)
    for _, _, bw in tf_dataset(x, y, w, batch=2, shuffle=False, seed=0, per_token=True):
        bw = bw.numpy()
        real = bw > 0
        # Keras's loss divides by every position: scaled so, that is the mean over real ones
        assert np.isclose(bw.sum(), bw.size) and np.allclose(bw[real], bw.size / real.sum())
