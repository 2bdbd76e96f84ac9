"""Build the course as a static website from the notebooks' stored outputs (nothing is executed).

    python scripts/build_site.py [--out _site]      # then open _site/index.html

Sphinx with myst-nb reads each notebook as it is stored (code, outputs, figures) and sphinx-book-theme
lays the chapters out in course order with a sidebar. Every exercise's solution cell is folded: the page
shows a "show the solution" toggle instead of the code, so a reader can try the exercise first.
Everything it needs is installed with `pip install -e ".[site]"`, and it builds offline. docs/site.md says
why this stack.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SOLUTION_TAG = "hide-input"  # myst-nb folds the cell's source behind a toggle; the output stays visible

CONF = '''
project = "minicohere: build Command-R from scratch"
author = "minicohere"
copyright = "minicohere, MIT licence"
extensions = ["myst_nb"]
nb_execution_mode = "off"            # the stored outputs are the page: nothing runs
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
html_theme = "sphinx_book_theme"
html_title = "minicohere"
html_theme_options = {"show_toc_level": 2, "use_download_button": True, "home_page_in_toc": True}
html_show_sourcelink = False
nb_code_prompt_show = "Show the solution"
nb_code_prompt_hide = "Hide the solution"
suppress_warnings = ["myst.header", "myst.xref_missing", "misc.highlighting_failure", "mystnb.unknown_mime_type"]
exclude_patterns = ["_build"]
'''

INDEX = '''# minicohere: build Command-R from scratch

A course that builds Cohere's Command-R (Hugging Face `model_type: "cohere"`) and its successor
`cohere2` one component at a time, in Jupyter notebooks, each checked against transformers and against
the package `minicohere`. These pages show the notebooks as they are stored, outputs and figures
included; to run them, clone the repository and follow its README (`bash scripts/setup.sh`, then
`jupyter lab notebooks/`).

Each chapter ends with exercises. Their solutions are folded: open "Show the solution" only after trying.

```{{toctree}}
:maxdepth: 1
:caption: Chapters

{chapters}
```
'''


def chapters() -> list[Path]:
    """The course's notebooks in chapter order (their names start with the chapter number)."""
    found = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise SystemExit(f"no chapter notebooks (NN_name.ipynb) in {NOTEBOOKS}")
    return found


def fold_solutions(notebook: dict) -> int:
    """Tag every nbgrader solution code cell so the page folds its source; returns how many were tagged."""
    folded = 0
    for cell in notebook["cells"]:
        grading = cell.get("metadata", {}).get("nbgrader", {})
        if cell["cell_type"] == "code" and grading.get("solution"):
            tags = cell["metadata"].setdefault("tags", [])
            if SOLUTION_TAG not in tags:
                tags.append(SOLUTION_TAG)
            folded += 1
    return folded


def write_sources(src: Path) -> int:
    """conf.py, index.md and a copy of each chapter (solutions tagged) under `src`; returns the folded count."""
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    (src / "conf.py").write_text(CONF)
    folded = 0
    for path in chapters():
        notebook = json.loads(path.read_text())
        folded += fold_solutions(notebook)
        (src / path.name).write_text(json.dumps(notebook))
    names = "\n".join(p.stem for p in chapters())
    (src / "index.md").write_text(INDEX.format(chapters=names))
    return folded


def build(out: Path, quiet: bool = True) -> Path:
    """Build the site into `out` (replaced); returns the path of its index.html."""
    try:
        import myst_nb  # noqa: F401
        import sphinx_book_theme  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"{e.name} is missing: install the site's tools with pip install -e \".[site]\"")
    work = REPO / "site" / "_build"
    folded = write_sources(work / "src")
    # Sphinx writes under site/_build (myst-nb puts its own folder beside the html one), then the html
    # is copied to `out`
    html = work / "html"
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-j", "auto", "-d", str(work / "doctrees"),
               str(work / "src"), str(html)] + (["-q"] if quiet else [])
    result = subprocess.run(command, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"sphinx-build failed (exit status {result.returncode}): {' '.join(command)}")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(html, out)
    index = out / "index.html"
    print(f"{len(chapters())} chapters, {folded} solutions folded: {index}")
    return index


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "_site"), help="the folder to write the site to (replaced)")
    ap.add_argument("--verbose", action="store_true", help="show sphinx's progress and warnings")
    args = ap.parse_args()
    build(Path(args.out).resolve(), quiet=not args.verbose)


if __name__ == "__main__":
    main()
