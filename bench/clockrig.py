"""The clock tests' rig around a listening `companion live` on a JACK server: the judge
(``jack_midi_dump -a judge``), ``jack_transport``, a ``jack_midi_clock``, and a python-rtmidi
performer, connected; used by the clock tests and by the lab's graph-stall count."""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.jackserver import JackdError, client_env
from bench.jitter import connect
from companion.midi.jacklib import SETTLE_S, close_in_turn, load_rtmidi

#: What jackd logs for a cycle that waited its whole timeout for the graph to finish.
STALLED = "SuspendRefNum error"


def start_judge(env: dict[str, str], dump_path: Path) -> subprocess.Popen:
    """``jack_midi_dump -a judge``: its dump in ``dump_path``, what it and libjack say (a
    real-time priority refused, a full ring buffer) beside it in ``judge.err``."""
    with open(dump_path, "w") as out, open(dump_path.with_name("judge.err"), "w") as err:
        return subprocess.Popen(["jack_midi_dump", "-a", "judge"], env=env, stdout=out,
                                stderr=err)


def companion_port(env: dict[str, str], suffix: str) -> str:
    """The companion's JACK port ending in ``suffix`` (its in and out are two clients)."""
    names = subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True,
                           timeout=20).stdout
    found = [n for n in names.split() if n.startswith("companion") and n.endswith(suffix)]
    if len(found) != 1:
        raise JackdError(f"no single companion port *{suffix} in {names.split()}")
    return found[0]


@dataclass
class Clients:
    """The clock rig's clients around the companion."""

    judge: subprocess.Popen
    transport: subprocess.Popen | None
    clock: subprocess.Popen
    performer: Any  # rtmidi.MidiOut


def set_up_clients(stack: contextlib.ExitStack, env: dict[str, str], dump_path: Path,
                   clock_args: list[str], transport: bool) -> Clients:
    """Around a companion listening on the server of ``env``: the judge (`start_judge`),
    ``jack_transport`` (with ``transport``) and ``jack_midi_clock clock_args`` started at
    once; the clock connected to the judge and the companion's input, the companion's output
    to the judge; a python-rtmidi output of this process (the performer) into the
    companion's input. Their teardown goes on ``stack``."""
    rtmidi = load_rtmidi()

    judge = start_judge(env, dump_path)
    stack.callback(judge.wait, timeout=5)
    stack.callback(judge.terminate)
    tp = None
    if transport:
        tp = subprocess.Popen(["jack_transport"], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        stack.callback(_quit, tp)
    clock = subprocess.Popen(["jack_midi_clock", *clock_args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(clock.wait, timeout=5)
    stack.callback(clock.terminate)
    connect(env, "jack_midi_clock:mclk_out", "judge:input")
    connect(env, "jack_midi_clock:mclk_out", companion_port(env, ":in"))
    connect(env, companion_port(env, ":out"), "judge:input")
    with client_env(env):
        performer = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name="performer")
    stack.callback(close_in_turn, [performer.close_port, performer.delete], SETTLE_S)
    performer.open_port(performer.get_ports().index(companion_port(env, ":in")), name="out")
    return Clients(judge, tp, clock, performer)


def _quit(transport: subprocess.Popen) -> None:
    try:
        transport.communicate("quit\n", timeout=10)
    except subprocess.TimeoutExpired:
        transport.kill()
        transport.wait()
