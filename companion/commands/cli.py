"""The `companion` command: live, ports, models, respond, demo, config, bench
(docs/interface.md).

Every failure the user can fix (usage, config, model, port, no MIDI system) is one line
``error: ...`` and exit 2; anything else is exit 1. Heavy modules are imported by the
subcommand that needs them: `companion live` never loads music21 or TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from companion import config as config_mod
from companion.config import Config, ConfigError
from companion.live_controls import CC_CONTROLS, LEARN_ALL

# auto, or a MIDI system by name: what the config key midi.backend accepts
BACKEND_CHOICES = config_mod.MidiConfig.__dataclass_fields__["backend"].metadata["choices"]
# what the config key accompany.mode accepts
ACCOMPANY_MODES = config_mod.AccompanyConfig.__dataclass_fields__["mode"].metadata["choices"]


class UsageError(Exception):
    """Exit 2 with this line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="companion", description="A real-time MIDI improvisation companion: "
                "it listens to a phrase and answers with a continuation, in time.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(sp: argparse.ArgumentParser, model: bool = True) -> None:
        sp.add_argument("--config", metavar="F", help="config file (default: ./config.yaml)")
        if model:
            sp.add_argument("--model", metavar="DIR", help="model package: its folder, or "
                            "the name of an installed one (config key: model)")

    live = sub.add_parser("live", help="the live companion on MIDI ports (until Ctrl-C)")
    common(live)
    live.add_argument("--input", metavar="NAME", help="listen to this port (substring of its name)")
    live.add_argument("--output", metavar="NAME", help="play to this port (substring of its name)")
    live.add_argument("--backend", choices=BACKEND_CHOICES, help="MIDI system")
    live.add_argument("--virtual", action="store_true",
                      help="open virtual ports whatever the config names")
    ui_help = ("serve the control surface in the browser and print its URL (config ui:; "
               "0.0.0.0:PORT for a tablet on the network)")
    live.add_argument("--ui", nargs="?", const="", metavar="[HOST:]PORT", help=ui_help)
    live.add_argument("--accompany", metavar="MODE", choices=ACCOMPANY_MODES,
                      help="play along: chords (and a bass) under what you play, "
                      f"{' | '.join(ACCOMPANY_MODES)} (config key: accompany.mode)")
    live.add_argument("--learn", action="append", metavar="NAME",
                      help=f"MIDI learn: the next CC that moves becomes this control "
                      f"({', '.join(CC_CONTROLS)}; all: {', '.join(LEARN_ALL)}, in turn), "
                      f"saved to the config file; repeatable")

    models = sub.add_parser("models", help="list the model packages a program change, the "
                            "control surface or OSC can switch to")
    common(models)
    models.add_argument("--json", action="store_true", help="print them as a JSON list")

    ports = sub.add_parser("ports", help="list MIDI input and output ports")
    ports.add_argument("--backend", choices=BACKEND_CHOICES, help="MIDI system")
    ports.add_argument("--config", metavar="F", help="config file (default: ./config.yaml)")

    respond = sub.add_parser("respond", help="answer a call read from a file, offline")
    respond.add_argument("call", metavar="CALL", help="MIDI, MusicXML, ABC... file")
    respond.add_argument("-o", dest="out", metavar="OUT.mid",
                         help="call + answer as a two-track MIDI file (default: CALL-response.mid)")
    common(respond)
    respond.add_argument("--seed", type=int, metavar="N",
                         help="random seed (same seed, same answer)")
    respond.add_argument("--tempo", type=float, metavar="BPM", help="tempo of the call")
    respond.add_argument("--json", action="store_true", help="print the answer's notes as JSON")
    respond.add_argument("--beats", type=float, metavar="B",
                         help="answer only the call's first B beats (an excerpt of a tune)")
    respond.add_argument("--plot", metavar="OUT.png",
                         help="draw the call and its answer as a piano roll (needs matplotlib)")

    acc = sub.add_parser("accompany", help="chords (and a bass) under a melody read from a "
                         "file, offline, as the live accompanist plays them")
    acc.add_argument("melody", metavar="MELODY", help="MIDI, MusicXML, ABC... file")
    acc.add_argument("-o", dest="out", metavar="OUT.mid",
                     help="melody + chords (+ bass) as a MIDI file (default: "
                     "MELODY-accompanied.mid)")
    acc.add_argument("--config", metavar="F", help="config file (default: ./config.yaml)")
    acc.add_argument("--harmony", metavar="DIR",
                     help="harmony package (config key: accompany.model)")
    acc.add_argument("--mode", choices=("chords", "chords_bass", "bass"),
                     help="what to play (config key: accompany.mode; off there: chords_bass)")
    acc.add_argument("--style", choices=("block", "bar", "broken"),
                     help="how the chords are played (config key: accompany.style)")
    acc.add_argument("--seed", type=int, metavar="N", help="random seed (with a temperature)")
    acc.add_argument("--tempo", type=float, metavar="BPM", help="tempo of the melody")
    acc.add_argument("--json", action="store_true",
                     help="print the chords and the accompaniment's notes as JSON")

    demo = sub.add_parser("demo", help="a call-and-response session in real time, no MIDI needed")
    common(demo)
    demo.add_argument("--seed", type=int, metavar="N", help="random seed")
    demo.add_argument("--ui", nargs="?", const="", metavar="[HOST:]PORT", help=ui_help)

    cfgp = sub.add_parser("config", help="where the config file is read from; --init writes "
                          "a copy of the shipped one, every setting documented, to edit")
    cfgp.add_argument("--config", metavar="F", help="config file (default: ./config.yaml)")
    cfgp.add_argument("--init", nargs="?", const="config.yaml", metavar="PATH",
                      help="write the shipped config.yaml to PATH (default: ./config.yaml; "
                      "never over a file already there)")

    # `companion bench ...` is parsed by bench.cli itself (see main); listed for --help
    sub.add_parser("bench", help="performance figures (`companion bench --help`)")
    return p


def _set(cfg: Config, key: str, value, option: str) -> None:
    try:
        config_mod.override(cfg, key, value)
    except ConfigError as e:
        raise UsageError(f"{option}: {str(e).split(': ', 1)[1]}") from e


def load_config(args: argparse.Namespace) -> Config:
    """The config file, then the command line over it."""
    cfg = config_mod.load(getattr(args, "config", None))
    if getattr(args, "model", None):
        _set(cfg, "model", args.model, "--model")
    if getattr(args, "backend", None):
        _set(cfg, "midi.backend", args.backend, "--backend")
    if getattr(args, "virtual", False):
        cfg.midi.input = cfg.midi.output = None
    if getattr(args, "input", None) is not None:
        _set(cfg, "midi.input", args.input, "--input")
    if getattr(args, "output", None) is not None:
        _set(cfg, "midi.output", args.output, "--output")
    if getattr(args, "seed", None) is not None:
        _set(cfg, "answer.seed", args.seed, "--seed")
    if getattr(args, "tempo", None) is not None:
        _set(cfg, "listen.tempo_bpm", args.tempo, "--tempo")
    for opt, key in (("harmony", "accompany.model"), ("mode", "accompany.mode"),
                     ("accompany", "accompany.mode"), ("style", "accompany.style")):
        if getattr(args, opt, None) is not None:
            _set(cfg, key, getattr(args, opt), f"--{opt}")
    if getattr(args, "ui", None):
        from companion.ui.guard import parse_address

        host, port = parse_address(args.ui, cfg.ui)
        _set(cfg, "ui.host", host, "--ui")
        _set(cfg, "ui.port", port, "--ui")
    return cfg


def _ports(cfg: Config) -> int:
    """The MIDI system chosen and why (one line), then the ports to listen and play to."""
    from companion.midi.ports import LABELS, describe, get_backend, list_ports, resolve_backend

    name, why = resolve_backend(cfg.midi.backend)
    backend = get_backend(name)
    print(f"MIDI system: {describe(name, why)}")
    ins, outs = list_ports(backend)
    label = LABELS[name]
    for title, names in ((f"MIDI inputs ({label}): ports to listen to", ins),
                         (f"MIDI outputs ({label}): ports to play to", outs)):
        print(title)
        for n in names:
            print(f"  {n}")
        if not names:
            print("  (none)")
    return 0


def _models(cfg: Config, as_json: bool) -> int:
    """`companion models`: the packages beside the configured model and those installed,
    one a line (name, size, idiom or corpora, the one in use marked)."""
    import json

    from companion.packages import list_packages, package_folders

    current = cfg.model_dir()
    infos = list_packages(package_folders(current))
    if as_json:
        print(json.dumps([i.as_dict() | {"in_use": i.path == current} for i in infos]))
        return 0
    for i in infos:
        what = i.idiom or ", ".join(i.corpora) or "no card"
        mark = "*" if i.path == current else " "
        print(f"{mark} {i.name:<16} {i.size_bytes / 1e6:6.1f} MB  {what}")
    return 0


#: The folder above companion/: in a clone of the repository, bench/ lies there too.
CLONE = Path(__file__).resolve().parents[2]
BENCH_ELSEWHERE = ("companion bench is not available: it runs from a clone of the repository, "
                   "where the bench package (bench/) lies beside companion/")


def _bench(argv: list[str]) -> int:
    """`companion bench`: the bench package's command (bench.cli, its options too), imported
    only here, from the clone this companion runs from (an editable install, or ``python -m
    companion`` there), whatever the working folder; installed from a wheel, which holds no
    bench, one line saying so and exit 1."""
    if not (CLONE / "bench" / "cli.py").is_file():
        print(f"error: {BENCH_ELSEWHERE}", file=sys.stderr)
        return 1
    if str(CLONE) not in sys.path:
        sys.path.insert(0, str(CLONE))
    try:
        import bench.cli as bench_cli
    except ModuleNotFoundError as e:
        if e.name not in ("bench", "bench.cli"):
            raise
        print(f"error: {BENCH_ELSEWHERE}", file=sys.stderr)
        return 1
    return int(bench_cli.main(bench_cli.parser().parse_args(argv)) or 0)


def _config(args: argparse.Namespace) -> int:
    """`companion config`: with --init, a copy of the shipped config.yaml written to edit;
    else the file the other commands read (checked) and where the shipped one is."""
    if args.init is not None:
        path = config_mod.init_config(args.init)
        print(f"wrote {path}: every setting, documented, with its default; the companion "
              f"reads ./config.yaml in the folder it runs in, or the file --config names")
        return 0
    path = Path(args.config) if args.config else config_mod.DEFAULT_PATH
    if args.config or path.exists():
        config_mod.load(path)  # a bad one is exit 2 with its line
        print(f"config file: {path.resolve()}")
    else:
        print(f"config file: none ({path} is not in {Path.cwd()}): every setting at its "
              f"default")
    print(f"shipped config: {config_mod.shipped_config()} (`companion config --init` "
          f"copies it into the working folder, to edit)")
    return 0


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "config":
        return _config(args)
    cfg = load_config(args)
    if args.command == "live":
        from companion.commands.live import run

        learn = args.learn or None
        if learn:
            bad = [n for n in learn if n not in (*CC_CONTROLS, "all")]
            if bad or ("all" in learn and len(learn) > 1):
                raise UsageError(f"--learn: expected one of {', '.join(CC_CONTROLS)} (or all "
                                 f"alone), got {(bad or learn)[0]!r}")
        return run(cfg, ui=args.ui is not None, learn=learn,
                   config_path=Path(args.config or "config.yaml"))
    if args.command == "models":
        return _models(cfg, args.json)
    if args.command == "ports":
        return _ports(cfg)
    if args.command == "respond":
        from companion.commands.respond import run

        return run(cfg, args.call, args.out, cfg.answer.seed, args.json,
                   plot=getattr(args, "plot", None), beats=getattr(args, "beats", None))
    if args.command == "accompany":
        from companion.commands.accompany import run

        return run(cfg, args.melody, args.out, cfg.answer.seed, args.json)
    if args.command == "demo":
        from companion.commands.demo import run

        return run(cfg, ui=args.ui is not None)
    raise UsageError("expected a command: live, ports, models, respond, accompany, demo, "
                     "config or bench "
                     "(see `companion --help`)")


def main(argv: list[str] | None = None) -> int:
    from companion.encoding.phrases import CallError
    from companion.engine.model import ModelError
    from companion.midi.ports import PortError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["bench"]:
            return _bench(argv[1:])
        args = _parser().parse_args(argv)
        return dispatch(args)
    except (UsageError, ConfigError, ModelError, PortError, CallError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - one line unless asked for the traceback
        if os.environ.get("COMPANION_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {e} (COMPANION_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
