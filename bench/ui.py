"""The web page never in the way of the music: ``ui_answer_latency_ms`` and
``ui_schedule_error_ms``, the live figures (bench/live.py) measured without the control
surface and with it (its server, and two browser-like WebSocket clients taking the roll's
stream and parsing every frame), in one run, side by side.

Goal: with the page, p99 within 10% or 0.2 ms (whichever is more) of without.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.figures import Plan, Result, log
from bench.live import play_calls, schedule_errors

if TYPE_CHECKING:
    from companion.realtime.live import Live

#: Browsers connected while measuring "with".
BROWSERS = 2
#: Rounds of each side, interleaved.
ROUNDS = 4


async def _read(base: str, count: int, stop: asyncio.Event) -> list[int]:
    """``count`` pages reading ``base``'s stream, each frame parsed, until ``stop``; returns
    the frames each read."""
    import aiohttp

    got = [0] * count

    async def page(i: int) -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(
                f"{base}/ws", headers={"Origin": base}) as ws:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    msg = await ws.receive(timeout=0.2)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return
                    json.loads(msg.data)
                    got[i] += 1

    await asyncio.gather(*(page(i) for i in range(count)))
    return got


def _browse(base: str, count: int) -> None:
    """``python -m bench.ui BASE COUNT``: the pages, in a process of their own (as browsers
    are), until stdin closes; then prints the frames read."""

    async def main() -> list[int]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.read(1) or stop.set())
        return await _read(base, count, stop)

    print(sum(asyncio.run(main())), flush=True)


@contextlib.contextmanager
def browsers(live: Live, count: int = BROWSERS) -> Iterator[list[int]]:
    """The control surface on ``live`` and ``count`` browser-like clients in a process of
    their own, reading its stream; the list yielded gets the frames they read, at the end."""
    from companion.ui.server import UiServer

    server = UiServer(live, "127.0.0.1", 0)
    server.start()
    base = f"http://127.0.0.1:{server.guard.port}"
    got: list[int] = []
    proc = subprocess.Popen([sys.executable, "-m", "bench.ui", base, str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 20
        while server.pages < count:  # every page connected before measuring
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the browser-like clients did not connect")
            time.sleep(0.05)
        yield got
    finally:
        out, _ = proc.communicate("", timeout=20)
        with contextlib.suppress(ValueError):
            got.append(int(out.strip() or 0))
        server.stop()


def _p99(res: Result, key: str) -> float | None:
    v = res.figures.get(key)
    return v["p99"] if isinstance(v, dict) else None


def measure_ui(model_dir: Path, plan: Plan, res: Result, quiet: bool) -> None:
    """Each live figure without the page and with it, in ROUNDS interleaved rounds (so that
    a change in the machine's load falls on both alike); p99 of each side, side by side."""
    part = dataclasses.replace(plan, answers=max(2, plan.answers // ROUNDS),
                               scheduled_notes=max(20, plan.scheduled_notes // ROUNDS))
    samples: dict[tuple[str, str], list[float]] = {}
    frames: list[int] = []

    @contextlib.contextmanager
    def attach(live: Live) -> Iterator[None]:
        with browsers(live) as got:
            yield
        frames.extend(got)

    log(f"bench: the live figures without and with the web page ({BROWSERS} browsers), "
        f"{ROUNDS} rounds", quiet)
    for r in range(ROUNDS):
        for cond in ("without", "with"):
            side = attach if cond == "with" else None
            probe = play_calls(model_dir, part, True, side, seed=10 + r)
            samples.setdefault((cond, "answer_latency_ms"), []).extend(
                x * 1000.0 for x in probe.answer)
            errs, _ = schedule_errors(model_dir, part, True, side, seed=20 + r)
            samples.setdefault((cond, "schedule_error_ms"), []).extend(x * 1000.0 for x in errs)
    for key in ("answer_latency_ms", "schedule_error_ms"):
        without, with_ = samples.get(("without", key)), samples.get(("with", key))
        if not without or not with_:
            res.set(f"ui_{key}", None, "a run gave no figure")
            continue
        p99 = {c: round(float(np.percentile(v, 99)), 3)
               for c, v in (("without", without), ("with", with_))}
        limit = max(p99["without"] * 1.1, p99["without"] + 0.2)
        ok = "ok" if p99["with"] <= limit else "MISSED"
        res.set(f"ui_{key}", p99,
                f"p99 of {key} over {len(without)} / {len(with_)} samples without the web page "
                f"and with it ({BROWSERS} browser-like clients in a process of their own, "
                f"{sum(frames)} frames read), {ROUNDS} interleaved rounds in one run; goal: "
                f"with <= {limit:.3f} ms (10% or 0.2 ms over without): {ok}")


if __name__ == "__main__":
    _browse(sys.argv[1], int(sys.argv[2]))
