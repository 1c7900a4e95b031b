"""Chord symbols and the harmony model's chord vocabulary: shared by training and the live
companion.

A chord is a root pitch class, a quality (``QUALITIES``: the intervals above the root) and
a bass, kept as the interval of the bass above the root (0 for root position). The
harmony model writes chords relative to a reference pitch class (``ref``, which the
caller chooses once per melody: companion.encoding.harmony takes the melody's first note),
so a token says ``root - ref`` (mod 12), the quality and the bass interval; the same token
is a D chord under a melody heard from D and an F chord under one heard from F.

``ChordVocabulary``: token 0 is ``N``, no chord (before the first chord of a tune, or
silence), then one token per (shape, relative root): ``1 + 12 * shape + root``, a shape
being a (quality, bass interval) pair kept from the training tunes. A chord whose shape is
not in the vocabulary takes the nearest one that is (``simplify``: its bass dropped, then
its quality made plainer).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

#: Intervals above the root of each quality (the root first). Names as the card and
#: vocabulary write them.
QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "7": (0, 4, 7, 10),
    "min7": (0, 3, 7, 10),
    "maj7": (0, 4, 7, 11),
    "6": (0, 4, 7, 9),
    "min6": (0, 3, 7, 9),
    "dim": (0, 3, 6),
    "dim7": (0, 3, 6, 9),
    "hdim7": (0, 3, 6, 10),
    "aug": (0, 4, 8),
    "sus4": (0, 5, 7),
    "7b9": (0, 4, 7, 10, 1),
}
#: A quality not kept in a vocabulary falls back to the next one down this chain.
PLAINER = {"7b9": "7", "min6": "min", "6": "maj", "maj7": "maj", "min7": "min", "7": "maj",
           "dim7": "dim", "hdim7": "dim", "aug": "maj", "sus4": "maj", "dim": "min"}
#: How chord symbols write each quality after the root (``name``).
SUFFIX = {"maj": "", "min": "m", "7": "7", "min7": "m7", "maj7": "maj7", "6": "6",
          "min6": "m6", "dim": "dim", "dim7": "dim7", "hdim7": "m7b5", "aug": "aug",
          "sus4": "sus4", "7b9": "7b9"}
#: The triad of each quality (a seventh chord counts as its triad where chords are compared).
TRIAD = {"maj": "maj", "min": "min", "7": "maj", "min7": "min", "maj7": "maj", "6": "maj",
         "min6": "min", "dim": "dim", "dim7": "dim", "hdim7": "dim", "aug": "aug",
         "sus4": "sus4", "7b9": "maj"}

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_LETTER = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

#: The qualities of chord symbols as the Nottingham ABC files write them (after the root):
#: "m" minor, "7", "m7", "6", "m6", "d" diminished, "a" augmented, "7b9", and the usual
#: spellings of other collections.
_SYMBOL_QUALITY = {
    "": "maj", "maj": "maj", "M": "maj", "m": "min", "min": "min", "-": "min",
    "7": "7", "dom7": "7", "m7": "min7", "min7": "min7", "-7": "min7",
    "maj7": "maj7", "M7": "maj7", "6": "6", "m6": "min6", "min6": "min6",
    "d": "dim", "dim": "dim", "o": "dim", "d7": "dim7", "dim7": "dim7", "o7": "dim7",
    "m7b5": "hdim7", "a": "aug", "aug": "aug", "+": "aug", "sus4": "sus4", "sus": "sus4",
    "7b9": "7b9",
}
_SYMBOL = re.compile(r"^\(?([A-Ga-g])([#b]?)([^/()]*?)(?:/([A-Ga-g])([#b+-]?)(b?))?\)?$")


@dataclass(frozen=True)
class Chord:
    """A chord in absolute pitch classes: root 0..11 (C = 0), quality (``QUALITIES``), bass
    as the interval above the root (0: root position)."""

    root: int
    quality: str
    bass: int = 0

    def pitch_classes(self) -> tuple[int, ...]:
        """Its pitch classes, root first."""
        return tuple((self.root + i) % 12 for i in QUALITIES[self.quality])

    def bass_pc(self) -> int:
        return (self.root + self.bass) % 12

    def triad(self) -> frozenset[int]:
        """The pitch classes of its triad (a seventh chord's, its triad's)."""
        return frozenset((self.root + i) % 12 for i in QUALITIES[TRIAD[self.quality]])

    @property
    def name(self) -> str:
        """A chord symbol: ``D``, ``Em``, ``A7/C#``."""
        s = NOTE_NAMES[self.root] + SUFFIX[self.quality]
        return s if self.bass == 0 else f"{s}/{NOTE_NAMES[self.bass_pc()]}"


def parse_symbol(text: str) -> Chord | None:
    """A chord symbol as the Nottingham ABC files write it (``G``, ``D7``, ``Em``, ``Bb``,
    ``F#m``, ``Cd`` diminished, ``Ca`` augmented, ``D/f+`` D over F sharp, ``Gm/bb`` over B
    flat, ``(E7)`` an optional chord) or in the usual spellings (``Bbmaj7``, ``C#dim7``,
    ``A7/C#``); None for what it cannot read. A bass that is not a note of the chord is
    taken as root position."""
    m = _SYMBOL.match(text.strip())
    if not m:
        return None
    letter, acc, qual, bass_letter, bass_acc, bass_flat = m.groups()
    quality = _SYMBOL_QUALITY.get(qual)
    if quality is None:
        return None
    root = (_LETTER[letter.upper()] + {"#": 1, "b": -1}.get(acc, 0)) % 12
    bass = 0
    if bass_letter:
        shift = {"#": 1, "+": 1, "b": -1, "-": -1}.get(bass_acc, 0) - (1 if bass_flat else 0)
        bass_pc = (_LETTER[bass_letter.upper()] + shift) % 12
        interval = (bass_pc - root) % 12
        bass = interval if interval in QUALITIES[quality] else 0
    return Chord(root, quality, bass)


def simplify(quality: str, bass: int, kept: set[tuple[str, int]]) -> tuple[str, int]:
    """The nearest shape of ``kept`` to (quality, bass): the bass dropped, then the quality
    made plainer (``PLAINER``) until one is kept; ``("maj", 0)`` at the end."""
    q = quality
    while True:
        if (q, bass) in kept and bass in QUALITIES[q]:
            return q, bass
        if (q, 0) in kept:
            return q, 0
        if q not in PLAINER:
            return "maj", 0
        q = PLAINER[q]


@dataclass
class ChordVocabulary:
    """The chords a harmony model names: ``N`` (token 0), then ``1 + 12 * shape + root`` for
    each shape (a (quality, bass interval) pair) and each root relative to the reference."""

    shapes: list[tuple[str, int]]

    def __post_init__(self) -> None:
        self.shapes = [(str(q), int(b)) for q, b in self.shapes]
        for q, b in self.shapes:
            if q not in QUALITIES or b not in QUALITIES[q]:
                raise ValueError(f"chord shape ({q!r}, {b}): expected a quality of "
                                 f"{', '.join(QUALITIES)} and a bass interval among its notes")
        self._index = {s: i for i, s in enumerate(self.shapes)}
        if len(self._index) != len(self.shapes):
            raise ValueError("chord shapes: each may appear once")

    NONE = 0

    @property
    def size(self) -> int:
        return 1 + 12 * len(self.shapes)

    @classmethod
    def build(cls, chords: Iterable[Chord], min_count: int = 5) -> ChordVocabulary:
        """The shapes of ``chords`` seen at least ``min_count`` times (root-position major
        and minor always), most frequent first."""
        counts = Counter((c.quality, c.bass) for c in chords)
        kept = [s for s, n in counts.most_common() if n >= min_count]
        for s in (("maj", 0), ("min", 0)):
            if s not in kept:
                kept.append(s)
        return cls(kept)

    def token(self, chord: Chord | None, ref: int) -> int:
        """The token of ``chord`` (None: ``N``) relative to the reference pitch class ``ref``;
        a shape not in the vocabulary takes its nearest (``simplify``)."""
        if chord is None:
            return self.NONE
        shape = simplify(chord.quality, chord.bass, set(self._index))
        return 1 + 12 * self._index[shape] + (chord.root - ref) % 12

    def chord(self, token: int, ref: int) -> Chord | None:
        """The chord of ``token`` with the reference pitch class ``ref`` (None for ``N``)."""
        if not 0 <= token < self.size:
            raise ValueError(f"chord token: expected 0..{self.size - 1}, got {token!r}")
        if token == self.NONE:
            return None
        shape, root = divmod(token - 1, 12)
        q, b = self.shapes[shape]
        return Chord((root + ref) % 12, q, b)

    def pitch_classes(self, token: int, ref: int) -> tuple[int, ...]:
        """The chord's pitch classes, root first (none for ``N``)."""
        c = self.chord(token, ref)
        return () if c is None else c.pitch_classes()

    def name(self, token: int, ref: int) -> str:
        c = self.chord(token, ref)
        return "N" if c is None else c.name

    def to_json(self) -> dict:
        return {"none": self.NONE, "roots": 12,
                "shapes": [[q, b] for q, b in self.shapes],
                "qualities": {q: list(QUALITIES[q]) for q in dict.fromkeys(
                    q for q, _ in self.shapes)}}

    @classmethod
    def from_json(cls, data: object, source: str = "harmony.json") -> ChordVocabulary:
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list) \
                or not data["shapes"] or data.get("none") != 0 or data.get("roots") != 12:
            raise ValueError(f"{source}: \"chords\" must be an object with \"none\": 0, "
                             f"\"roots\": 12 and a non-empty list of \"shapes\"")
        try:
            return cls([(q, b) for q, b in data["shapes"]])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from e


def chord_pitches(chord: Chord | None, below: int, low: int = 48, bass_low: int = 36,
                  bass: bool = True) -> list[int]:
    """A plain voicing of ``chord``: each of its pitch classes once, in close position, the
    highest under ``below`` (the melody's pitch: the chord never crosses it) and none under
    ``low`` where it fits, and with ``bass`` its bass note in the octave from ``bass_low``
    first. Voice leading between chords is the caller's."""
    if chord is None:
        return []
    top = max(below - 1, low + 11)
    notes = []
    for pc in chord.pitch_classes():
        p = top - (top - pc) % 12  # the highest of this pitch class at or under top
        if p < low:
            p += 12
        notes.append(p)
    notes.sort()
    if bass:
        b = bass_low + (chord.bass_pc() - bass_low) % 12
        notes.insert(0, b)
    return notes
