"""nbval's cell markers: a comment line that means one must be one nbval reads.

nbval only honours a marker that stands alone on its comment line (`# NBVAL_IGNORE_OUTPUT`); with words
after it the line is an ordinary comment and the cell's output is compared after all, which passes on a
machine like the one that stored it and fails on a learner's (e.g. with or without llama-cpp-python)."""

from __future__ import annotations

import nbformat
import pytest
from nbval.plugin import find_comment_markers

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def marker_lines(source: str) -> list[str]:
    return [line.strip() for line in source.splitlines() if line.strip().startswith("#") and "NBVAL_" in line]


def test_a_marker_with_words_after_it_is_not_read_by_nbval():
    assert list(find_comment_markers("# NBVAL_IGNORE_OUTPUT\nx = 1"))
    assert not list(find_comment_markers("# NBVAL_IGNORE_OUTPUT (a timing)\nx = 1"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_nbval_marker_in_the_notebooks_is_one_nbval_reads(path):
    nb = nbformat.read(path, as_version=4)
    unread = [(i, line) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
              for line in marker_lines(cell.source) if not list(find_comment_markers(line))]
    assert not unread, f"{path.name}: put the marker alone on its line (cell, line): {unread}"
