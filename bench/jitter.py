"""``answer_onset_jitter_ms``: how far from their scheduled times notes leave the companion's
output, per MIDI system and period, judged sample-accurately by ``jack_midi_dump -a``.

Notes are sent through the same kind of port the companion answers on (mido's python-rtmidi
JACK output) at scheduled times on our clock (sleep, then a short spin, as the scheduler
does), 20 ms apart plus up to 5 ms at random, so that they fall anywhere in a cycle. The
judge stamps each with its frame; a least-squares line maps our clock onto frames (the two
clocks' offset and rate), and each note's distance from that line is its onset error.
RtMidi writes every message at the start of the next JACK cycle, so the error spreads over
a period. ALSA has no such judge here (and this machine no ALSA sequencer): its note says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.figures import Plan, Result, log, stats
from bench.jackserver import RATE, SCHED_KEY, JackdError, client_env, dummy_server

PERIODS = (64, 256, 1024)
SPACING_S, SPREAD_S = 0.020, 0.005
SPIN_S = 0.002  # the last stretch before a note is spun, not slept


def _dump_ons(path: Path) -> list[int]:
    """The frames of the note-ons in a ``jack_midi_dump -a`` log."""
    out = []
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(\d+):\s9[0-9a-f]\s[0-9a-f]{2}\s([0-9a-f]{2})", line)
        if m and int(m.group(2), 16) > 0:
            out.append(int(m.group(1)))
    return out


def connect(env: dict, a: str, b: str) -> None:
    """``jack_connect a b``, tried again for 10 s while a port is not there yet."""
    deadline = time.monotonic() + 10
    while subprocess.run(["jack_connect", a, b], env=env, capture_output=True,
                         timeout=20).returncode:
        if time.monotonic() > deadline:
            raise JackdError(f"cannot connect {a} -> {b}")
        time.sleep(0.1)


def onset_errors_ms(frames: int, notes: int, seed: int = 1) -> tuple[np.ndarray, str]:
    """Each note's onset error (ms, signed, from the line through all of them) on a private
    JACK server at ``frames`` a period; and how the server was scheduled."""
    import mido

    from companion.midi.jacklib import load_rtmidi

    load_rtmidi()  # before mido's rtmidi backend imports it: the companion's libjack

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="jitter") as folder, \
            dummy_server(frames, prefix="companion-jitter") as env, contextlib.ExitStack() as st:
        dump = Path(folder) / "dump.txt"
        out = st.enter_context(open(dump, "w"))  # noqa: SIM115 - closed by the stack
        judge = subprocess.Popen(["jack_midi_dump", "-a", "judge"], env=env, stdout=out,
                                 stderr=subprocess.DEVNULL)
        st.callback(judge.wait)
        st.callback(judge.terminate)
        with client_env(env):
            port = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output(
                "out", virtual=True, client_name="jitter")
        st.callback(port.close)
        connect(env, "jitter:out", "judge:input")
        time.sleep(0.3)
        sent = []
        t = time.perf_counter() + 0.1
        for i in range(notes):
            t += SPACING_S + rng.random() * SPREAD_S
            time.sleep(max(0.0, t - SPIN_S - time.perf_counter()))
            while time.perf_counter() < t:
                pass
            port.send(mido.Message("note_on", note=60 + i % 24, velocity=90))
            sent.append(t)
        time.sleep(0.2)
        sched = env[SCHED_KEY]
        st.close()
        got = _dump_ons(dump)
    if len(got) != len(sent):
        raise RuntimeError(f"the judge heard {len(got)} of {len(sent)} notes ({sched})")
    ts, fs = np.array(sent), np.array(got, dtype=np.float64) / RATE
    a, b = np.polyfit(ts, fs, 1)
    return (fs - (a * ts + b)) * 1000.0, sched


def measure_jitter(plan: Plan, res: Result, quiet: bool) -> None:
    """``answer_onset_jitter_ms``: per period, ``jack{FRAMES}_{p50,p99,max}`` of the onset
    errors' distance from their median."""
    fig: dict[str, object] = {}
    notes_text = []
    if shutil.which("jackd") is None or shutil.which("jack_midi_dump") is None:
        res.set("answer_onset_jitter_ms", None, "jackd and jack_midi_dump are not installed")
        return
    for frames in PERIODS:
        log(f"onset jitter: JACK at {frames} frames ...", quiet)
        err, sched = onset_errors_ms(frames, max(50, plan.jack_notes))
        dev = np.abs(err - np.median(err))
        for k, v in stats(dev, ("p50", "p99", "max")).items():
            fig[f"jack{frames}_{k}"] = v
        notes_text.append(f"JACK {frames} frames ({frames * 1000 / RATE:.2f} ms): "
                          f"{len(err)} notes, jackd {sched}")
    alsa = ("ALSA: no sequencer (/dev/snd/seq) on this machine" if not os.path.exists(
        "/dev/snd/seq") else "ALSA: not measured (jack_midi_dump judges JACK only)")
    res.set("answer_onset_jitter_ms", fig,
            "; ".join(notes_text) + f"; judged by jack_midi_dump -a frames; {alsa}")
