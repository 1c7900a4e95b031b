"""Model packages: where one named in the config is found, which ones there are, and what a
package's name may be. Apart from the model itself (companion.engine.model), so that the
config can check its keys without importing the engine.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


class ModelError(ValueError):
    """A missing or broken model package (exit 2)."""


INSTALLED = "companion.models"
#: card.json's ``"kind"`` of a melody model package (also what a card without one is);
#: a harmony package says ``"harmony"`` (companion.engine.harmony).
MELODY = "melody"  # the package the shipped model packages are installed as


def read_card(folder: Path, kind: str | None = None) -> dict:
    """A package's card.json ({} where there is none); ModelError when it is not a JSON
    object, or, with ``kind``, names another kind (a card without one is taken as it)."""
    p = folder / "card.json"
    if not p.exists():
        return {}
    try:
        card = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(card, dict):
        raise ModelError(f"{p}: expected a JSON object, got {type(card).__name__}")
    if kind is not None and card.get("kind", kind) != kind:
        raise ModelError(f"{p}: expected a card with \"kind\": \"{kind}\"")
    return card


def locate(model: str | Path, base_dir: Path) -> Path:
    """The folder of the model package ``model`` (config key ``model``, ``--model``).

    An absolute path is taken as it is. A relative one is tried against ``base_dir`` (the
    config file's folder), then the working folder; a bare ``NAME`` or ``models/NAME`` found
    in neither is looked up among the packages installed with the companion
    (``companion.models``), so ``models/default`` is found from any working folder. The first
    folder that exists wins; none: ModelError naming every place looked in.
    """
    path = Path(model).expanduser()
    if path.is_absolute():
        tried = [path]
    else:
        tried = list(dict.fromkeys([base_dir / path, Path.cwd() / path]))
        parts = path.parts
        if len(parts) == 1 or (len(parts) == 2 and parts[0] == "models"):
            installed = installed_models()
            if installed is not None:
                tried.append(installed / parts[-1])
    for folder in tried:
        if folder.is_dir():
            return folder
    where = "" if tried == [path] else f"; looked in {', '.join(map(str, tried))}"
    raise ModelError(f"{model}: no model package there (expected a folder with model.onnx{where})")


def installed_models() -> Path | None:
    """The folder of the model packages installed with the companion, if it is one."""
    try:
        root = resources.files(INSTALLED)
    except ModuleNotFoundError:
        return None
    return root if isinstance(root, Path) else None


#: What a model package's name may be (a folder name: never a path from a client).
PACKAGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class PackageInfo:
    """A model package as listed (``companion models``, the web page, OSC): its name, folder,
    what it was trained on (card.json ``idiom`` if set, ``corpora``) and model.onnx's size."""

    name: str
    path: Path
    idiom: str | None
    corpora: tuple[str, ...]
    size_bytes: int

    def as_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "idiom": self.idiom,
                "corpora": list(self.corpora), "size_bytes": self.size_bytes}


def package_folders(configured: Path | None) -> list[Path]:
    """Where packages are listed from, first wins on a name: the folder holding the
    configured model package (``configured``, its own folder), then the installed ones."""
    folders = [configured.parent] if configured is not None else []
    installed = installed_models()
    if installed is not None and installed not in folders:
        folders.append(installed)
    return folders


def list_packages(folders: list[Path]) -> list[PackageInfo]:
    """Every melody model package (a folder with model.onnx and a valid name whose card.json
    says no other ``"kind"`` than ``"melody"``: a harmony package is not one to answer
    with) in ``folders``, by name; a name found twice is the first folder's. A card that is
    missing or unreadable lists no corpora."""
    found: dict[str, PackageInfo] = {}
    for folder in folders:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for d in entries:
            onnx = d / "model.onnx"
            if d.name in found or not PACKAGE_NAME.fullmatch(d.name) or not onnx.is_file():
                continue
            try:
                card = json.loads((d / "card.json").read_text())
            except (OSError, ValueError):
                card = {}
            card = card if isinstance(card, dict) else {}
            if card.get("kind", MELODY) != MELODY:
                continue
            idiom = card.get("idiom")
            corpora = card.get("corpora")
            found[d.name] = PackageInfo(
                d.name, d, idiom if isinstance(idiom, str) else None,
                tuple(map(str, corpora)) if isinstance(corpora, list) else (),
                onnx.stat().st_size)
    return [found[n] for n in sorted(found)]


def find_package(name: object, folders: list[Path]) -> Path:
    """The folder of the package called ``name`` among ``list_packages(folders)``: a name,
    never a path (a client of the web page or OSC names one of those listed). ModelError
    naming what is there otherwise."""
    if isinstance(name, str) and PACKAGE_NAME.fullmatch(name):
        for info in list_packages(folders):
            if info.name == name:
                return info.path
    names = ", ".join(i.name for i in list_packages(folders)) or "none"
    raise ModelError(f"model: expected the name of a model package ({names}), got {name!r}")
