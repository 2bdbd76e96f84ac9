"""The classroom copies: solutions stripped cleanly, and every exercise check fails on the unsolved stub."""

from __future__ import annotations

import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from make_student_copies import SolutionMarkerError, has_solutions, strip_solutions, student_copy  # noqa: E402

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_strip_keeps_the_frame_and_indentation():
    source = "def f(x):\n    '''Square it.'''\n    ### BEGIN SOLUTION\n    y = x * x\n    return y\n    ### END SOLUTION\nprint(f)"
    assert strip_solutions(source) == "def f(x):\n    '''Square it.'''\n    raise NotImplementedError()\nprint(f)"


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", "without ### END SOLUTION"),
    ("x = 1\n### END SOLUTION", "line 2: ### END SOLUTION without"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "line 2: ### BEGIN SOLUTION inside"),
])
def test_unbalanced_markers_are_refused_with_the_place(source, message):
    with pytest.raises(SolutionMarkerError, match=message):
        strip_solutions(source, "nb.ipynb, cell 3")


def is_check(cell) -> bool:
    return cell.metadata.get("nbgrader", {}).get("grade", False)


def is_solution(cell) -> bool:
    return cell.metadata.get("nbgrader", {}).get("solution", False)


def errors(cell) -> list[str]:
    return [o.get("ename", "") for o in cell.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_has_exercises_that_pass_in_the_teacher_copy(path):
    teacher = nbformat.read(path, as_version=4)
    checks = [c for c in teacher.cells if is_check(c)]
    assert has_solutions(teacher) and 2 <= len(checks) <= 4
    for cell in checks:
        printed = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        assert "PASS: Exercise" in printed, f"{path.name}: a check cell did not pass in the stored run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_copy_runs_to_its_exercises_and_every_check_fails(path):
    copy = student_copy(nbformat.read(path, as_version=4), path.name)
    assert "### BEGIN SOLUTION" not in "".join(c.source for c in copy.cells)
    # Cells that need a GPU or the hub are not part of the classroom run.
    copy.cells = [c for c in copy.cells if not (c.cell_type == "code" and c.source.lstrip().startswith("# NBVAL_SKIP"))]
    NotebookClient(copy, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    code = [c for c in copy.cells if c.cell_type == "code"]
    first_exercise = next(i for i, c in enumerate(code) if is_solution(c))
    for cell in code[:first_exercise]:
        assert not errors(cell), f"{path.name}: the lesson fails before the exercises:\n{cell.source[:200]}"
    checks = [c for c in code if is_check(c)]
    for cell in checks:
        assert errors(cell), f"{path.name}: this check passes without a solution:\n{cell.source[:300]}"
