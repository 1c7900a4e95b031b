"""Answer onsets against an external beat grid: an Ableton Link session's and a MIDI clock's.

``link_onset_error_ms``: a real Link peer (its own process and aalink instance) sets the
session's tempo; the companion (a Live on the in-process loopback, ``time.clock: link``,
answers quantized to eighths) answers calls; each answer note's send time is placed on
the peer's beat grid (the peer reads its beat between two readings of the shared monotonic
clock) and its distance to the nearest eighth is the error. Link finds peers by multicast:
every peer runs in a network namespace of its own with only the loopback interface
(``unshare -n``, root), so no packet leaves the machine.

``clock_onset_error_ms``: the same calls against a MIDI clock (24 ticks a beat, sent on the
loopback at their exact times by a thread of this process), the error against the grid of
the ticks as sent.

``python -m bench.link session MODEL_DIR STEPS_JSON`` runs a Link session inside a namespace
(``in_namespace`` starts it) and prints one JSON object; ``peer QUANTUM BPM`` is the peer.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.figures import Plan, Result, log, stats

#: The loopback-only network a namespace gets: multicast routed to ``lo``.
NS_SETUP = (("ip", "link", "set", "lo", "up"), ("ip", "link", "set", "lo", "multicast", "on"),
            ("ip", "route", "add", "224.0.0.0/4", "dev", "lo"))
QUANTUM = 4
CALL = [(67, 0.0, 0.4), (69, 0.5, 0.4), (71, 1.0, 0.4), (72, 1.5, 0.4), (74, 2.0, 0.9)]
#: The subdivision the answers are quantized to (eighths), in beats.
SUBDIVISION = 0.5


def isolation_problem() -> str | None:
    """Why a loopback-only network namespace cannot be made here; None when it can."""
    if sys.platform != "linux":
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "unshare -n needs root"
    missing = [c for c in ("unshare", "ip") if shutil.which(c) is None]
    if missing:
        return f"{' and '.join(missing)} not found (util-linux, iproute2)"
    try:
        import aalink  # noqa: F401
    except ImportError:
        from companion.extras import install_hint

        return f"the aalink binding is not installed ({install_hint('link')})"
    return None


def isolate() -> None:
    """Inside a fresh namespace: bring up ``lo`` with multicast; refuse to go on if any
    other interface is there (Link traffic must never reach a real one)."""
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        raise RuntimeError(f"not a loopback-only network namespace (interfaces: {names})")
    for cmd in NS_SETUP:
        subprocess.run(cmd, check=True, capture_output=True)


def in_namespace(args: list[str], timeout: float = 180.0) -> dict[str, Any]:
    """``python -m bench.link ARGS`` in a new network namespace; its JSON answer."""
    proc = subprocess.run(["unshare", "-n", sys.executable, "-m", "bench.link", *args],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the Link session failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the peer: its own process and Link instance, driven by lines on stdin -------------------

def _reading(link: Any) -> dict[str, float]:
    """The peer's beat on the monotonic clock (shared by every process here)."""
    from companion.realtime.link import beat_now

    t, beat = beat_now(link, readings=5)
    return {"t": t, "beat": beat, "tempo": link.tempo, "peers": link.num_peers,
            "playing": link.playing}


async def _peer(quantum: float, bpm: float) -> None:
    from aalink import Link

    link = Link(bpm)
    link.quantum = quantum
    link.start_stop_sync_enabled = True
    link.enabled = True
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line or line[0] == "quit":
            break
        if line[0] == "tempo":
            link.tempo = float(line[1])
        elif line[0] == "play":
            link.playing = line[1] == "1"
        print(json.dumps(_reading(link)), flush=True)
    link.enabled = False


class Peer:
    """The peer process: ``ask("tempo 90")`` and the like, each answered with a reading."""

    def __init__(self, quantum: float = QUANTUM, bpm: float = 120.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.link", "peer", str(quantum),
                                      str(bpm)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def ask(self, line: str = "read") -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            self.ask("quit")
        except (OSError, ValueError):
            pass
        self.proc.wait(timeout=5)


# -- the companion's side ------------------------------------------------------------------

def _config(model_dir: Path, time_cfg: dict[str, Any]) -> Any:
    from companion import config

    return config.from_dict({
        "model": str(model_dir),
        "listen": {"tempo_bpm": 120},
        "answer": {"seed": 1, "length": 4, "min_beats": 4, "max_beats": 4, "start": "beat"},
        "time": {"quantize": "1/8", "swing": 0.5, **time_cfg},
        "session": {"enabled": False},
    })


class _Companion:
    """A started Live on the loopback; plays calls into it and collects each answer."""

    def __init__(self, model_dir: Path, time_cfg: dict[str, Any]) -> None:
        from companion.engine.model import StepModel
        from companion.midi.loopback import LoopbackIn, LoopbackOut
        from companion.realtime.live import Live

        cfg = _config(model_dir, time_cfg)
        self.events: list[tuple[str, float, dict]] = []
        self.lock = threading.Lock()
        self.inport = LoopbackIn()
        self.live = Live(cfg, StepModel(cfg.model_dir()), self.inport, LoopbackOut(), seed=1,
                         on_event=self._event)
        self.live.scheduler.observe(self._added)
        self.live.start()

    def _event(self, kind: str, t: float, **d: Any) -> None:
        with self.lock:
            self.events.append((kind, t, d))

    def _added(self, answer: int, note: Any, t: float) -> None:
        with self.lock:
            self.events.append(("planned", note.start, {"answer": answer}))

    def call(self, bpm: float, timeout: float = 20.0) -> dict[str, Any]:
        """Play CALL at ``bpm``; wait for its answer to be played out (or held). Returns
        {"onsets": [send time of each answer note], "planned": [the time each was planned
        for], "held": bool}: the plan is the engine's reading of the external grid, the
        sends add the scheduler's own error."""
        import mido

        with self.lock:
            self.events.clear()
        beat = 60.0 / bpm
        t0 = time.perf_counter() + 0.05
        msgs = sorted([(s, 1, mido.Message("note_on", note=p, velocity=80)) for p, s, _ in CALL]
                      + [(s + d, 0, mido.Message("note_off", note=p)) for p, s, d in CALL],
                      key=lambda e: (e[0], e[1]))
        for s, _, m in msgs:
            time.sleep(max(0.0, t0 + s * beat - time.perf_counter()))
            self.inport.deliver(m)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                kinds = [k for k, _, _ in self.events]
                ons = [(d["index"], t) for k, t, d in self.events if k == "note_on"]
                ended = [d for k, _, d in self.events if k == "phrase_end"]
                planned = sorted(t for k, t, _ in self.events if k == "planned")
            if "held" in kinds:
                return {"onsets": [], "planned": [], "held": True}
            if ended and len(ons) >= ended[0]["notes"]:
                return {"onsets": [t for _, t in sorted(ons)], "planned": planned,
                        "held": False}
            time.sleep(0.01)
        raise RuntimeError("no answer came")

    def stop(self) -> None:
        self.live.stop()


def link_session(model_dir: Path, steps: list[list[Any]], lead: bool = False) -> dict[str, Any]:
    """In a namespace (``isolate`` first): a peer and the companion in one Link session.
    ``steps``: ["tempo", BPM] (the peer sets it), ["play", 0/1] (the peer's transport),
    ["call", BPM] (a call played at BPM: its answer's onsets and the peer's grid after it)."""
    isolate()
    peer = Peer()
    comp = _Companion(model_dir, {"clock": "link", "link_quantum": QUANTUM, "link_lead": lead})
    out: dict[str, Any] = {"steps": []}
    try:
        end = time.monotonic() + 15.0
        while comp.live.link.peers() < 1 or peer.ask()["peers"] < 1:
            if time.monotonic() > end:
                raise RuntimeError("the peers never found each other")
            time.sleep(0.05)
        for kind, value in steps:
            if kind == "call":
                got = comp.call(float(value))
                got["grid"] = peer.ask()
                out["steps"].append({"call": value, **got})
            else:
                out["steps"].append({kind: value, "grid": peer.ask(f"{kind} {value}")})
                time.sleep(0.3)  # the session's new state reaches the companion
        out["end"] = peer.ask()
        out["quantum"] = QUANTUM
    finally:
        comp.stop()
        peer.close()
    return out


def onset_errors_ms(onsets: list[float], beat_at: Callable[[float], float], beat_s: float,
                    every: float = SUBDIVISION) -> list[float]:
    """Each onset's distance (ms) to the nearest multiple of ``every`` beats of the grid
    ``beat_at`` (time -> beat) whose beat lasts ``beat_s``."""
    out = []
    for t in onsets:
        q = beat_at(t) / every
        out.append(abs(q - round(q)) * every * beat_s * 1000.0)
    return out


def link_errors(step: dict[str, Any], quantum: float = QUANTUM,
                tempo: float | None = None, which: str = "onsets") -> tuple[float, list[float]]:
    """(first onset's distance to the peer's bar, every onset's to its eighths), ms; on
    the grid read after the answer, or at ``tempo`` through the same reading. ``which``:
    "onsets" (as sent) or "planned" (as the engine placed them)."""
    g = step["grid"]
    beat_s = 60.0 / (tempo or g["tempo"])

    def beat_at(t: float) -> float:
        return g["beat"] + (t - g["t"]) / beat_s

    bar = onset_errors_ms(step[which][:1], beat_at, beat_s, quantum)[0]
    return bar, onset_errors_ms(step[which], beat_at, beat_s)


def clock_session(model_dir: Path, calls: int, bpm: float) -> list[float]:
    """Onset errors (ms) of ``calls`` answers against a MIDI clock at ``bpm`` sent on time
    into the companion's input."""
    import mido

    comp = _Companion(model_dir, {"clock": "follow"})
    per = 60.0 / bpm / 24
    stop = threading.Event()
    t0 = time.perf_counter() + 0.05
    tick, start = mido.Message("clock"), mido.Message("start")

    def send() -> None:
        from companion.realtime.clock import realtime_thread

        realtime_thread()
        comp.inport.deliver(start)
        n = 0
        while not stop.is_set():
            due = t0 + n * per
            while (left := due - time.perf_counter()) > 0.001:
                time.sleep(left - 0.0008)
            while time.perf_counter() < due:
                pass
            comp.inport.deliver(tick)
            n += 1

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    errs: list[float] = []
    try:
        time.sleep(1.0)  # the follower's window fills
        for _ in range(calls):
            got = comp.call(bpm)
            errs += onset_errors_ms(got["onsets"], lambda t: (t - t0) / (24 * per), 24 * per)
    finally:
        stop.set()
        thread.join(timeout=2)
        comp.stop()
    return errs


def measure_link(model_dir: Path, plan: Plan, res: Result, quiet: bool) -> None:
    """``link_onset_error_ms`` and, beside it, ``clock_onset_error_ms`` (p50, p99, max)."""
    calls = max(2, plan.answers // 30)
    bpm = 150.0
    log(f"bench: {calls} answers on a MIDI clock at {bpm:g} BPM", quiet)
    errs = clock_session(model_dir, calls, bpm)
    res.set("clock_onset_error_ms", stats(errs, ("p50", "p99", "max")),
            f"{len(errs)} answer notes of {calls} answers, quantized to eighths, against the "
            f"grid of a MIDI clock at {bpm:g} BPM sent on the in-process loopback")
    why = isolation_problem()
    if why is not None:
        res.set("link_onset_error_ms", None, f"not measured: {why}")
        return
    log(f"bench: {calls} answers in a Link session at {bpm:g} BPM (network namespace)", quiet)
    steps = [["tempo", bpm]] + [["call", bpm]] * calls
    out = in_namespace(["session", str(model_dir), json.dumps(steps)])
    errs = []
    for step in out["steps"]:
        if "onsets" in step:
            errs += link_errors(step)[1]
    res.set("link_onset_error_ms", stats(errs, ("p50", "p99", "max")),
            f"{len(errs)} answer notes of {calls} answers, quantized to eighths, against the "
            f"beat grid of a Link peer (another process) at {bpm:g} BPM, in a loopback-only "
            f"network namespace")


def main(argv: list[str]) -> int:
    if argv[0] == "peer":
        asyncio.run(_peer(float(argv[1]), float(argv[2])))
        return 0
    if argv[0] == "session":
        lead = len(argv) > 3 and argv[3] == "lead"
        print(json.dumps(link_session(Path(argv[1]), json.loads(argv[2]), lead)), flush=True)
        return 0
    print(f"usage: python -m bench.link session MODEL_DIR STEPS_JSON [lead] | peer QUANTUM BPM "
          f"(got {argv[0]!r})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
