"""The tutorial's table, reproduced on the 1034 Nottingham melodies (bench.data's folder)."""

import pytest

from companion.encoding.curves import Vocabulary
from train.corpus import load_corpus
from train.dataset import melody_curves

TUTORIAL_CURVES = 195_174


@pytest.mark.slow
def test_nottingham_table(capsys, nottingham):
    folder = nottingham[0].parent
    corpus = load_corpus([str(folder)], progress=False)
    curves = [melody_curves(m) for m in corpus.melodies]
    total = sum(len(c) for c in curves)
    vocab = Vocabulary.build(curves)
    with capsys.disabled():
        print(f"\nNottingham: {len(corpus.melodies)} songs, {total} curves "
              f"(tutorial {TUTORIAL_CURVES}, {100 * (total / TUTORIAL_CURVES - 1):+.3f}%), "
              f"vocabulary {len(vocab.curves)} curves (tutorial 422, unquantized read 302)")
    assert corpus.failed == []
    assert len(corpus.melodies) == 1034
    assert abs(total - TUTORIAL_CURVES) <= 0.005 * TUTORIAL_CURVES
    # snapping to the 1/24 grid merges the triplet near-duplicates the tutorial kept
    assert len(vocab.curves) < 302
