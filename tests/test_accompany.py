"""Playing along on the virtual clock: the Accompanist's voicing and timing, `companion
accompany`, and bench.accompany's figures on a hand-made case. The harmony package has
random weights (train.harmony.random_package: no TensorFlow, no training)."""

from __future__ import annotations

import json

import mido
import numpy as np
import pytest

from bench.accompany import measure, rule_changes
from companion.commands.accompany import play_along
from companion.encoding.chords import Chord, ChordVocabulary
from companion.encoding.curves import Vocabulary, curves_from_notes
from companion.encoding.harmony import StepVocab
from companion.encoding.melody import Melody
from companion.engine.accompany import (
    Accompanist,
    AccompanySettings,
    match,
    motion,
    voice,
    voicings,
    window,
)
from companion.engine.harmony import HarmonyModel

C, D, E, F, G, A, B = 0, 2, 4, 5, 7, 9, 11


def melody(notes, bar: float = 4.0, start: float = 0.0) -> Melody:
    p = np.array([n[0] for n in notes])
    on = np.array([n[1] for n in notes], float)
    dur = np.array([n[2] for n in notes], float)
    return Melody("m", p, on, dur, np.full(len(p), 90), (on - start) % bar,
                  np.full(len(p), bar))


#: Eight bars in G, 4/4 with a quarter pickup, going down to middle C in bar 5.
TUNE = [(62, 0, 1)] + [(p, 1 + k, 1) for k, p in enumerate(
    [67, 71, 74, 71, 72, 69, 66, 62, 67, 71, 67, 62, 64, 62, 60, 62,
     67, 69, 71, 72, 74, 72, 71, 69, 67, 66, 64, 62, 67, 67, 67, 67])]


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    from train.harmony import random_package

    m = melody(TUNE, start=1.0)
    chords = [Chord(G, "maj"), Chord(D, "7"), Chord(C, "maj"), Chord(E, "min"),
              Chord(A, "min"), Chord(D, "maj", 4)]
    v = StepVocab(Vocabulary.build([curves_from_notes(m.pitches, m.onsets)]),
                  ChordVocabulary.build(chords, min_count=1))
    return random_package(v, tmp_path_factory.mktemp("harmony") / "h", units=24, seed=3)


def accompanist(pkg, **kw) -> Accompanist:
    s = AccompanySettings(**{"change_bias": 3.0, "temperature": 1.0, **kw})
    return Accompanist(HarmonyModel(pkg), s, seed=1)


@pytest.mark.parametrize("style", ["block", "bar", "broken"])
def test_chords_never_cross_the_melody_and_move_by_small_steps(pkg, style):
    a = play_along(accompanist(pkg, style=style), melody(TUNE, start=1.0), 120, 0.05, 0.015, 4)
    chords = [n for n in a.notes if n.part == "chord"]
    bass = [n for n in a.notes if n.part == "bass"]
    assert chords and bass and len({d.chord for d in a.decisions if d.changed}) > 2
    for n in chords:
        for p, on, dur, _ in a.played:
            if on < n.end - 1e-9 and n.start < on + dur - 1e-9:  # they sound together
                assert n.pitch < p, (n, p, on)
    assert all(36 <= n.pitch < 48 for n in bass)
    # each new voicing moves least from the one before among those that fit
    voicings_played = []
    for d in a.decisions:
        v = d.voicing
        if v and (not voicings_played or v != voicings_played[-1]):
            voicings_played.append(v)
    steps = [motion(x, y) / len(y) for x, y in
             zip(voicings_played[:-1], voicings_played[1:], strict=True)]
    assert steps and max(steps) <= 4.0


def test_voice_leading_takes_the_nearest_inversion():
    assert voice(Chord(C, "maj"), [], 71, 48) == [60, 64, 67]  # the highest that fits
    assert voice(Chord(F, "maj"), [60, 64, 67], 71, 48) == [60, 65, 69]
    assert voice(Chord(G, "maj"), [60, 64, 67], 71, 48) == [59, 62, 67]
    assert voice(Chord(G, "7"), [60, 64, 67], 71, 48) == [59, 62, 65, 67]
    # under a low melody the whole chord goes down, never above the ceiling
    assert all(max(v) <= 57 for v in voicings((0, 4, 7), 40, 57))


def test_every_chord_is_decided_before_its_beat_at_most_a_beat_ahead(pkg):
    for look in (0.0, 0.05, 5.0):
        a = play_along(accompanist(pkg), melody(TUNE, start=1.0), 100, look, 0.015, 2)
        decided = [d for d in a.decisions if d.chord is not None]
        assert decided
        assert all(d.beat - 1.0 - 1e-9 <= d.decided <= d.beat for d in decided)
        if look > 0:
            assert all(d.decided < d.beat for d in decided)
        # and the notes of each slot start on its beat, never before it is decided
        for d in decided:
            assert all(n.start >= d.beat - 1e-9 for n in d.notes)


def test_velocities_are_under_the_performers_and_channels_their_own(pkg):
    a = play_along(accompanist(pkg, channel=5, bass_channel=6), melody(TUNE, start=1.0), 120)
    assert {n.channel for n in a.notes if n.part == "chord"} == {4}
    assert {n.channel for n in a.notes if n.part == "bass"} == {5}
    assert max(n.velocity for n in a.notes) < 90


def test_the_offline_command_writes_melody_chords_and_bass(pkg, tmp_path, capsys):
    from companion.commands.cli import main

    abc = tmp_path / "tune.abc"
    abc.write_text("X:1\nT:Test\nM:4/4\nL:1/4\nK:G\nD|GBdB|cAFD|GBGD|EDCD|GABc|dcBA|GFED|G4|]\n")
    out = tmp_path / "out.mid"
    rc = main(["accompany", str(abc), "-o", str(out), "--harmony", str(pkg), "--json",
               "--seed", "3"])
    assert rc == 0 and out.is_file()
    data = json.loads(capsys.readouterr().out)
    assert data["chords"] and all(c["decided_beat"] < c["beat"] for c in data["chords"])
    mid = mido.MidiFile(out)
    names = [next((m.name for m in t if m.type == "track_name"), "") for t in mid.tracks]
    assert "melody" in names and "chords" in names and "bass" in names
    chords = mid.tracks[names.index("chords")]
    assert any(m.type == "note_on" and m.velocity > 0 and m.channel == 1 for m in chords)


#: Two bars of 4/4: C E G C | F A C A.
HAND = [(60, 0, 1), (64, 1, 1), (67, 2, 1), (72, 3, 1), (65, 4, 1), (69, 5, 1), (72, 6, 1),
        (69, 7, 1)]


def test_the_figures_on_a_hand_made_case():
    m = melody(HAND)
    # slots from beat 1 (the first after the first onset) to 7; strong: 2, 4, 6
    t = measure(m, [(0.0, Chord(C, "maj")), (4.0, Chord(G, "maj"))],
                [(0.0, Chord(C, "maj")), (4.0, Chord(F, "maj"))], [(4.0, 3.9), (2.0, 2.0)])
    assert t.in_time == pytest.approx(3.0) and t.all_time == pytest.approx(7.0)
    f = t.figures(real_changes_per_bar=0.5)
    assert f["note_in_chord"] == pytest.approx(3 / 7)
    assert (t.strong_in, t.strong_n) == (1, 3)
    assert (t.agree, t.agree_n) == (1, 3)
    assert t.changes == 1 and t.bars == pytest.approx(7 / 4)
    assert f["changes_per_bar"] == pytest.approx(4 / 7)
    assert f["rhythm_ratio"] == pytest.approx(8 / 7)
    assert t.distinct == [2] and f["decided_before"] == 0.5
    # a seventh chord counts as its triad; the tune's own chords agree with themselves
    own = [(0.0, Chord(C, "maj")), (4.0, Chord(F, "maj"))]
    assert measure(m, [(0.0, Chord(C, "7")), (4.0, Chord(F, "maj7"))], own).agree == 3
    assert measure(m, own, own).figures()["note_in_chord"] == pytest.approx(1.0)
    # the rule baseline: per bar, I, IV, V, vi, ii covering most of it (I, V, IV... on ties)
    assert rule_changes(m) == [(1.0, Chord(C, "maj")), (4.0, Chord(F, "maj"))]


def _notes(notes) -> tuple[np.ndarray, np.ndarray]:
    return np.array([o for _, o in notes], float), np.array([p for p, _ in notes])


def test_two_passages_match_where_their_notes_are_twins():
    on, pit = _notes([(60, 0), (64, 1), (67, 2), (72, 3), (60, 8), (64, 9.1), (67, 10),
                      (72, 11), (60, 16), (65, 17), (67, 18), (71, 19)])
    a, b, c = (window(on, pit, x, x + 4) for x in (0, 8, 16))
    assert match(a, b, 4, 0, 8) == pytest.approx(1.0)  # onsets 0.1 apart: twins
    assert match(a, c, 4, 0, 16) == pytest.approx(0.5)  # two of four notes differ
    assert match(a, b, 4, 0, 7) == 0.0  # the same notes a beat off: none are twins
    assert match(a, window(on, pit, 4, 8), 4, 0, 4) == 0.0  # silence: nothing to match


#: Four bars of 4/4 (C, F, G, C), then the same four again.
FORM = [(p, 4 * bar + k, 1) for _ in range(2) for bar, ps in enumerate(
    [(60, 64, 67, 64), (65, 69, 72, 69), (67, 71, 74, 71), (72, 67, 64, 60)])
    for k, p in enumerate(ps)]
FORM = [(p, o + 16 * (i >= 16), d) for i, (p, o, d) in enumerate(FORM)]


def test_the_form_takes_what_followed_the_passage_heard_again(pkg):
    acc = accompanist(pkg, temperature=0.0, change_bias=0.0, key_weight=0.0, fit_weight=0.0,
                      common_weight=0.0, form_weight=1000.0)
    notes = sorted(FORM, key=lambda n: n[1])
    matched, chords = {}, {}
    for beat in range(1, 32):  # each slot decided 0.1 beat ahead, the notes before it heard
        # (the next change left unknown: a span ends where the next begins)
        while notes and notes[0][1] < beat - 0.1:
            p, o, _ = notes.pop(0)
            acc.hear(p, 90, float(o), (int(o) % 4) * 12)
        d = acc.slot(float(beat), (beat % 4) * 12, 4.0, beat - 0.1)
        if beat % 2 == 0:
            matched[beat] = acc.form_match
            chords[beat] = set(d.chord.pitch_classes())
    # the first time through nothing matches; the second, bar 2 is heard again from beat
    # 20 on: its chords are taken from what followed the first time (F, A; G, B)
    assert all(matched[b] is None for b in range(2, 16, 2))
    assert matched[20] == (pytest.approx(1.0), 4.0) and matched[24][1] == 8.0
    assert {F, A} <= chords[20] and {G, B} <= chords[24]
    # only what was heard before the decision counts: a note after it changes nothing
    got = acc._form(32.0, 0, 4.0, 31.9)
    acc.hear(61, 90, 32.0, 0)
    assert np.array_equal(acc._form(32.0, 0, 4.0, 31.9), got)


def test_the_common_triads_of_the_key_heard(pkg):
    acc = accompanist(pkg)
    for k, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60]):
        acc.hear(p, 90, float(k), None)
    acc.harmonizer.query(None)
    common = acc._common()
    v, ref = acc.model.chords, acc.harmonizer.ref
    for chord, want in ((Chord(C, "maj"), 1), (Chord(F, "maj"), 1), (Chord(G, "7"), 1),
                        (Chord(A, "min"), 1), (Chord(D, "min"), 1), (Chord(E, "min"), 0),
                        (Chord(D, "maj"), 0), (Chord(G, "min"), 0)):
        assert common[v.token(chord, ref)] == want, chord
    assert common[ChordVocabulary.NONE] == 0
