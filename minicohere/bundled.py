"""Where the files the project ships live: the tiny trained model, its tokenizer and the corpus.

In a clone (and an editable install) they sit in the repository's `assets/` folder; a regular install
(`pip install .`) copies them into the package as `minicohere/_assets/`. `MINICOHERE_ASSETS` points
anywhere else (a notebook copied out of the repository, a classroom server).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def asset_roots() -> list[Path]:
    """The folders searched, in order."""
    roots = []
    if os.environ.get("MINICOHERE_ASSETS"):
        roots.append(Path(os.environ["MINICOHERE_ASSETS"]).expanduser())
    roots.append(PACKAGE_DIR / "_assets")          # a regular install
    roots.append(PACKAGE_DIR.parent / "assets")    # a clone or an editable install
    return roots


def bundled_path(name: str) -> Path:
    """Path of a shipped asset, e.g. `bundled_path("tiny-command-r")` or `bundled_path("corpus/val.txt")`.

    Raises FileNotFoundError naming every place it looked.
    """
    tried = []
    for root in asset_roots():
        candidate = root / name
        if candidate.exists():
            return candidate
        tried.append(str(candidate))
    raise FileNotFoundError(f"minicohere's bundled {name!r} was not found; looked in: {', '.join(tried)}. "
                            "Set MINICOHERE_ASSETS to the repository's assets/ folder, or reinstall with "
                            "`pip install .` from a full clone.")
