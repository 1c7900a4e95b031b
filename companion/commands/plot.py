"""`companion respond --plot`: the call and its answer as a piano roll (PNG, SVG, PDF...).

matplotlib is imported here only, when a plot is asked for: the live companion never
loads it, and it is an optional dependency.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from companion.encoding.key import SCALES
from companion.encoding.names import note_name, parse_key
from companion.encoding.phrases import PhraseNote

CALL_COLOUR = "#3b6ea8"
ANSWER_COLOUR = "#d9822b"


def piano_roll(
    path: str | Path,
    call: Sequence[PhraseNote],
    answer: Sequence[PhraseNote],
    title: str = "",
    key: str | None = None,
) -> Path:
    """Draw ``call`` and ``answer`` (beats on one timeline) into ``path``; with ``key``
    (e.g. "D major"), the rows of its scale tones are shaded."""
    try:
        import matplotlib
    except ModuleNotFoundError as e:
        from companion.extras import install_hint

        raise RuntimeError(f"--plot needs matplotlib, the `plot` extra: "
                           f"{install_hint('plot')}") from e
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    notes = list(call) + list(answer)
    if not notes:
        raise ValueError("nothing to plot: no notes")
    lo = min(n.pitch for n in notes) - 2
    hi = max(n.pitch for n in notes) + 2
    end = max(n.start + n.duration for n in notes)
    fig, ax = plt.subplots(figsize=(max(6.0, min(16.0, end * 0.45)), 4.5), dpi=120)
    if key is not None:
        tonic, mode = parse_key(key)
        for p in range(lo, hi + 1):
            if (p - tonic) % 12 in SCALES[mode]:
                ax.axhspan(p - 0.5, p + 0.5, color="#eeeeee", zorder=0, lw=0)
    for group, colour in ((call, CALL_COLOUR), (answer, ANSWER_COLOUR)):
        for n in group:
            ax.add_patch(Rectangle((n.start, n.pitch - 0.4), n.duration, 0.8,
                                   facecolor=colour, edgecolor="black", lw=0.5,
                                   alpha=0.45 + 0.55 * n.velocity / 127, zorder=2))
    if call and answer:
        ax.axvline(answer[0].start, color="grey", ls="--", lw=0.8, zorder=1)
    ax.set_xlim(0, end + 0.5)
    ax.set_ylim(lo - 0.5, hi + 0.5)
    ticks = [p for p in range(lo, hi + 1) if p % 12 in (0, 2, 4, 5, 7, 9, 11)]
    ax.set_yticks(ticks, [note_name(p) for p in ticks], fontsize=7)
    ax.set_xlabel("beats")
    ax.grid(axis="x", color="#cccccc", lw=0.5, zorder=0)
    handles = [Patch(color=CALL_COLOUR, label="call"), Patch(color=ANSWER_COLOUR,
                                                               label="answer")]
    if key is not None:
        handles.append(Patch(color="#eeeeee", label=f"scale of {key}"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
