"""Model switching: the listing of packages, the engine's swap between answers (never within
one), ``Live.apply("model", NAME)`` loading in the background, and a program change picking a
package from config ``models:`` (in-process loopback, and `companion live` over JACK)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import mido
import pytest
from support import LOOP_TEMPO as TEMPO
from support import EngineRig, make_config, play, tunes, wait_for, write_config

from companion.config import ConfigError, from_dict
from companion.engine.model import ModelError, StepModel
from companion.midi.loopback import LoopbackIn, LoopbackOut
from companion.packages import find_package, list_packages, package_folders
from companion.realtime.live import Live

CALL = [(64, 0, 0.4), (67, 0.5, 0.4), (69, 1, 0.4), (71, 1.5, 0.4), (72, 2, 0.9)]


@pytest.fixture(scope="module")
def packages(tmp_path_factory, model_pkg) -> Path:
    """A models folder: alpha (the tests' model), beta (another vocabulary, other sizes and
    weights, with a card), a folder without model.onnx and one whose name is no package's."""
    from companion.encoding.curves import Vocabulary, curves_from_notes
    from train.export import StepWeights, write_package

    root = tmp_path_factory.mktemp("models")
    shutil.copytree(model_pkg, root / "alpha")
    beta = root / "beta"
    beta.mkdir()
    vocab = Vocabulary.build([curves_from_notes(m.pitches, m.onsets) for m in tunes(5, 4)])
    write_package(StepWeights.random(vocab.size, units=48, seed=11), vocab, beta)
    (beta / "card.json").write_text(json.dumps({"corpora": ["music21:oneills1850"],
                                                "idiom": "Irish reels"}))
    (root / "empty").mkdir()
    shutil.copytree(model_pkg, root / "has space")
    return root


@pytest.fixture(scope="module")
def alpha(packages) -> StepModel:
    return StepModel(packages / "alpha")


@pytest.fixture(scope="module")
def beta(packages) -> StepModel:
    return StepModel(packages / "beta")


# -- the listing ---------------------------------------------------------------------------


def test_listing_names_only_packages(packages):
    folders = package_folders(packages / "alpha")
    assert folders[0] == packages
    infos = {i.name: i for i in list_packages(folders)}
    assert {"alpha", "beta"} <= set(infos)
    assert "empty" not in infos and "has space" not in infos
    assert infos["beta"].idiom == "Irish reels"
    assert infos["beta"].corpora == ("music21:oneills1850",)
    assert infos["beta"].size_bytes == (packages / "beta" / "model.onnx").stat().st_size
    assert infos["alpha"].idiom is None and infos["alpha"].corpora == ()
    assert find_package("beta", folders) == packages / "beta"


@pytest.mark.parametrize("name", ["nope", "../beta", str(Path("x") / "beta"), "", None, 3,
                                  "has space"])
def test_a_name_that_is_no_listed_package_is_refused(packages, name):
    with pytest.raises(ModelError) as e:
        find_package(name, package_folders(packages / "alpha"))
    msg = str(e.value)
    assert "\n" not in msg and "alpha" in msg and "beta" in msg and repr(name) in msg


def test_config_models_maps_programs_to_names():
    assert make_config(models={1: "alpha", 128: "beta"}).models == {1: "alpha", 128: "beta"}
    for bad, key in (({0: "alpha"}, "models"), ({1: "a/b"}, "models.1"), ({1: 2}, "models.1"),
                     (["alpha"], "models")):
        with pytest.raises(ConfigError, match=rf"^{key}: "):
            from_dict({"models": bad})


# -- the engine's swap ---------------------------------------------------------------------


def _rig(model, packages, seed=3) -> EngineRig:
    cfg = make_config(packages / "alpha", listen={"tempo_bpm": TEMPO, "phrase_end_beats": 1},
                      answer={"length": 4, "min_beats": 4})
    return EngineRig(model, cfg, seed)


def test_swap_waits_for_the_answer_playing(alpha, beta, packages):
    rig = _rig(alpha, packages)
    rig.play(CALL)
    first = rig.poll(rig.engine.next_deadline())
    assert first is not None and rig.engine.model is alpha
    mid = first.notes[0].start + 1e-3
    rig.to(mid)  # the answer sounds
    assert rig.engine.use_model(beta) is False
    assert rig.engine.swap_pending and rig.engine.model is alpha
    rig.poll(mid + 0.01)
    assert rig.engine.model is alpha  # never within an answer
    end = max(n.end for n in first.notes)
    rig.poll(end + 0.01)
    assert rig.engine.model is beta and rig.engine.model_name == "beta"
    (swap,) = rig.events_of("model")
    assert swap["name"] == "beta" and swap["t"] >= end
    assert not rig.engine.swap_pending
    # the next answer is beta's: its tokens index beta's vocabulary, its style memory is new
    rig.play(CALL, t0=end + 1.0)
    second = rig.poll(rig.engine.next_deadline())
    assert second is not None and rig.engine.model is beta
    assert all(0 <= t < beta.vocab.size - len(beta.vocab.specials) for t in second.tokens)
    assert rig.engine.state.h.shape == beta.zero_state().h.shape


def test_swap_mid_call_hears_the_call_again(alpha, beta, packages):
    """A swap while a call is played: the new model hears that call from its start, so the
    answer is the one it would have given having heard the whole call itself."""
    whole = _rig(beta, packages)
    whole.play(CALL)
    want = whole.poll(whole.engine.next_deadline())
    swapped = _rig(alpha, packages)
    swapped.play(CALL[:3])
    assert swapped.engine.use_model(beta) is True  # no answer playing: at once
    swapped.play(CALL[3:], t0=0)
    got = swapped.poll(swapped.engine.next_deadline())
    assert got is not None and want is not None
    assert got.tokens == want.tokens
    assert [(n.pitch, n.start) for n in got.notes] == [(n.pitch, n.start) for n in want.notes]


def test_swap_at_a_barge_in(alpha, beta, packages):
    """The performer cuts the answer: the swap comes at the new call's first note, which
    the new model starts from."""
    rig = _rig(alpha, packages)
    rig.play(CALL)
    first = rig.poll(rig.engine.next_deadline())
    rig.to(first.notes[0].start + 1e-3)
    rig.engine.use_model(beta)
    t = rig.clock.now() + 0.01
    rig.at(t, mido.Message("note_on", note=60, velocity=80))
    assert rig.engine.model is beta and rig.engine.prev == (60, t)
    assert [e["answer"] for e in rig.events_of("barge_in")] == [first.id]


# -- live: apply("model", NAME) and program changes -----------------------------------------


@pytest.fixture
def live_rig(alpha, packages):
    made = []

    def make(**sections):
        sections.setdefault("listen", {"tempo_bpm": TEMPO, "phrase_end_beats": 1})
        cfg = make_config(packages / "alpha", **sections)
        events: list = []
        lines: list[str] = []

        def event(kind, t, **d):
            if kind == "phrase_end":  # on the engine thread, right after the answer is made
                d = d | {"model": live.engine.model_name}
            events.append((kind, t, d))

        inport, out = LoopbackIn(), LoopbackOut()
        live = Live(cfg, alpha, inport, out, seed=4, on_event=event, log=lines.append)
        live.start()
        made.append(live)
        return live, inport, out, events, lines

    yield make
    for live in made:
        live.stop()






def kinds(events, kind):
    return [(t, d) for k, t, d in list(events) if k == kind]


def test_program_change_switches_the_model_for_the_next_answer(live_rig):
    live, inport, out, events, lines = live_rig(models={1: "alpha", 2: "beta"},
                                                answer={"length": 2, "max_beats": 2})
    in_use = {m["name"]: m["in_use"] for m in live.models()}
    assert in_use["alpha"] is True and in_use["beta"] is False
    play(inport, CALL)
    wait_for(lambda: kinds(events, "phrase_end"))
    assert kinds(events, "phrase_end")[0][1]["model"] == "alpha"
    inport.deliver(mido.Message("program_change", program=1))  # program 2: beta
    wait_for(lambda: kinds(events, "model"))
    assert kinds(events, "model")[0][1]["name"] == "beta"
    assert [d["value"] for _, d in kinds(events, "control") if d["name"] == "model"] == ["beta"]
    play(inport, CALL)
    wait_for(lambda: len(kinds(events, "phrase_end")) == 2)
    assert kinds(events, "phrase_end")[1][1]["model"] == "beta"
    assert any("model beta in use" in line for line in lines)
    # an unmapped program is the keyboard's own business: nothing happens
    inport.deliver(mido.Message("program_change", program=9))
    inport.deliver(mido.Message("program_change", program=0))  # back to alpha
    wait_for(lambda: len(kinds(events, "model")) == 2)
    assert kinds(events, "model")[1][1]["name"] == "alpha"
    assert {m["name"]: m["in_use"] for m in live.models()}["alpha"] is True


def test_a_bad_model_name_is_a_one_line_refusal(live_rig):
    live, inport, out, events, lines = live_rig()
    replies: list = []
    for name in ("nope", "../beta", None, {"a": 1}):
        live.post("model", name, replies.append)
    wait_for(lambda: len(replies) == 4)
    for r in replies:
        assert isinstance(r, str) and r.startswith("model: expected the name of a model "
                                                   "package (alpha, beta")
        assert "\n" not in r
    time.sleep(0.2)
    assert not kinds(events, "model") and live.engine.model_name == "alpha"


def test_the_swap_never_happens_mid_answer(live_rig):
    live, inport, out, events, lines = live_rig(
        models={2: "beta"}, answer={"length": 8, "min_beats": 8, "max_beats": 8})
    play(inport, CALL)
    wait_for(lambda: kinds(events, "note_on"))
    answer = live.engine.answer
    inport.deliver(mido.Message("program_change", program=1))
    wait_for(lambda: kinds(events, "model"), timeout=15)
    t_swap = kinds(events, "model")[0][0]
    offs = [t for t, d in kinds(events, "note_off") if d["answer"] == answer.id]
    assert len(offs) == len(answer.notes)  # the whole answer played, to its last note-off
    assert max(offs) <= t_swap
    assert any("in use when the answer playing ends" in line for line in lines)


def test_models_naming_a_missing_package_stops_the_start(alpha, packages):
    cfg = make_config(packages / "alpha", models={3: "gamma"})
    with pytest.raises(ConfigError, match=r"^models\.3: expected the name of a model package"):
        Live(cfg, alpha, LoopbackIn(), LoopbackOut())


# -- over JACK: `companion live` and a program change -----------------------------------------


@pytest.mark.jack
@pytest.mark.parametrize("jack_server", [1024], indirect=True)
def test_program_change_over_jack(jack_server, monkeypatch, packages, tmp_path):
    from support import Companion, Performer

    for k, v in jack_server.items():
        if k.startswith("JACK"):
            monkeypatch.setenv(k, v)
    cfg = write_config(tmp_path / "config.yaml", packages / "alpha",
                       listen={"tempo_bpm": 120.0, "phrase_end_beats": 1.0},
                       answer={"length": 2, "max_beats": 2, "max_note_beats": 1.0},
                       session={"enabled": False}, models={1: "alpha", 5: "beta"})
    comp = Companion(jack_server, "--config", str(cfg))
    performer = None
    try:
        comp.wait_ready()
        performer = Performer()
        performer.play(CALL)
        wait_for(lambda: any("-> answer of" in line for line in comp.lines), 15)
        performer.to.send(mido.Message("program_change", program=4))
        wait_for(lambda: any("model beta in use" in line for line in comp.lines), 15)
        before = sum("-> answer of" in line for line in comp.lines)
        heard_before = len(performer.received())
        performer.play(CALL)
        wait_for(lambda: sum("-> answer of" in line for line in comp.lines) > before, 15)
        wait_for(lambda: len([m for _, m in performer.received()[heard_before:]
                              if m.type == "note_on"]) > 0, 15)
    finally:
        if performer is not None:
            performer.close()
        rc = comp.stop()
    assert rc == 0, "\n".join(comp.lines)
    swap = next(i for i, line in enumerate(comp.lines) if "model beta in use" in line)
    answers = [i for i, line in enumerate(comp.lines) if "-> answer of" in line]
    assert answers[0] < swap < answers[-1], "\n".join(comp.lines)

