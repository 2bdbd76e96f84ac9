"""The course as a website: scripts/build_site.py builds it from the stored outputs, and a real browser
(headless Chromium) opens two chapters, one for a figure and one for code with its output.

Skipped, with the reason, where the site's tools (`pip install -e ".[site]"`) or Chromium are missing.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("myst_nb", reason="the site's tools are not installed: pip install -e \".[site]\"")
pytest.importorskip("sphinx_book_theme", reason="the site's tools are not installed: pip install -e \".[site]\"")
bs4 = pytest.importorskip("bs4", reason="beautifulsoup4 (a dependency of nbconvert) reads the rendered DOM")
Image = pytest.importorskip("PIL.Image", reason="Pillow (a dependency of matplotlib) reads the screenshot")

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FIGURE_PAGE, CODE_PAGE = "04_rope", "09_sampling"


def browser() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip(f"no headless browser on PATH ({', '.join(BROWSERS)}): apt-get install chromium")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    browser()  # skip before building where there is no browser to open the pages
    out = tmp_path_factory.mktemp("site") / "html"
    res = subprocess.run([sys.executable, "scripts/build_site.py", "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def open_in_browser(page: Path, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess:
    """One headless Chromium run on a fresh profile, offline: nothing in the page may need the network."""
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600", *mode, page.as_uri()]
    res = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def rendered(page: Path, tmp_path: Path):
    """The page's DOM after the browser ran its scripts, and its screenshot."""
    dom = bs4.BeautifulSoup(open_in_browser(page, tmp_path, "--dump-dom").stdout, "html.parser")
    shot = tmp_path / "page.png"
    open_in_browser(page, tmp_path, f"--screenshot={shot}")
    return dom, Image.open(shot).convert("L")


def assert_not_blank(image):
    # a blank or failed page is one colour; a rendered chapter has text, code blocks and a sidebar
    pixels = list(image.getdata())
    dark = sum(1 for p in pixels if p < 128) / len(pixels)
    assert len(set(pixels)) > 16 and 0.005 < dark < 0.5, (len(set(pixels)), dark)


def stored(stem: str) -> dict:
    return json.loads((REPO / "notebooks" / f"{stem}.ipynb").read_text())


def test_a_chapter_page_shows_its_stored_figure_and_folds_its_solutions(site, tmp_path):
    dom, shot = rendered(site / f"{FIGURE_PAGE}.html", tmp_path)
    assert_not_blank(shot)
    notebook = stored(FIGURE_PAGE)
    title = "".join(notebook["cells"][0]["source"]).splitlines()[0].lstrip("# ").strip()
    assert dom.find("h1").get_text(" ", strip=True).startswith(title.split(":")[0])
    figures = [img for img in dom.select(".cell_output img") if img.get("src", "").endswith(".png")]
    n_figures = sum("image/png" in o.get("data", {}) for c in notebook["cells"] for o in c.get("outputs", []))
    assert len(figures) == n_figures > 0
    for img in figures:
        with Image.open(site / img["src"]) as png:
            assert png.width > 100 and png.height > 100, img["src"]
    # every nbgrader solution cell is folded behind a toggle, and only those
    solutions = [c for c in notebook["cells"] if c["cell_type"] == "code" and
                 c.get("metadata", {}).get("nbgrader", {}).get("solution")]
    folded = dom.select("details.hide.above-input")
    assert len(folded) == len(solutions) > 0
    assert all("Show the solution" in d.find("summary").get_text() for d in folded)
    first_line = next(line for line in "".join(solutions[0]["source"]).splitlines() if line.strip())
    assert any(first_line.strip() in d.get_text() for d in folded)


def test_a_chapter_page_shows_code_with_its_stored_output(site, tmp_path):
    dom, shot = rendered(site / f"{CODE_PAGE}.html", tmp_path)
    assert_not_blank(shot)
    cell = next(c for c in stored(CODE_PAGE)["cells"] if c["cell_type"] == "code" and
                any(o.get("name") == "stdout" for o in c.get("outputs", [])) and
                not c.get("metadata", {}).get("nbgrader", {}).get("solution"))
    source_line = next(line for line in "".join(cell["source"]).splitlines() if line.strip() and
                       not line.startswith("#"))
    printed = next(line for o in cell["outputs"] if o.get("name") == "stdout"
                   for line in "".join(o["text"]).splitlines() if line.strip())
    code = [block.get_text() for block in dom.select(".cell_input pre")]
    outputs = [block.get_text() for block in dom.select(".cell_output pre")]
    assert any(source_line.strip() in html.unescape(text) for text in code), source_line
    assert any(printed.strip() in html.unescape(text) for text in outputs), printed
    # highlighted: the code is split into token spans, not shown as plain text
    assert dom.select(".cell_input pre span.k, .cell_input pre span.kn")
