"""Every exercise check tells its answer from the mistakes a learner makes.

For a chapter `notebooks/NN_topic.ipynb`, `tests/wrong_answers/NN_topic.py` holds a dictionary

    WRONG = {"ex-NN-k": ["<a plausible wrong answer>", "<another>"], ...}

keyed by the solution cell's nbgrader `grade_id`. Each string is what a learner might write between
`### BEGIN SOLUTION` and `### END SOLUTION` (written flush left; it is indented like the BEGIN marker).
The chapter runs once, in a kernel, in a folder outside the repository (as the student copies do); just
before each solution cell, every wrong answer is run in place of the solution, followed by the exercise's
check cell, which must fail with an AssertionError (`course.ExerciseFailed` is one). Any other exception
means the wrong answer did not run (not a plausible answer) or the check crashed instead of judging it.
Then the real solution and its check run as stored and must pass.
"""

from __future__ import annotations

import importlib.util
import shutil
import textwrap

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WRONG_DIR = REPO / "tests" / "wrong_answers"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
MARK = "WRONG-ANSWER-RESULT"


def grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def is_solution(cell) -> bool:
    return cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution", False)


def is_check(cell) -> bool:
    return cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade", False)


def wrong_answers(path) -> dict[str, list[str]]:
    file = WRONG_DIR / f"{path.stem}.py"
    if not file.is_file():
        return {}
    spec = importlib.util.spec_from_file_location(f"wrong_{path.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WRONG


def replace_region(source: str, answer: str) -> str:
    """`source` with the lines between the solution markers (markers included) replaced by `answer`."""
    lines = source.split("\n")
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(BEGIN))
    end = next(i for i, line in enumerate(lines) if line.strip().startswith(END))
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    body = textwrap.indent(textwrap.dedent(answer).strip("\n"), indent)
    return "\n".join(lines[:start] + [body] + lines[end + 1:])


def trial_cell(key: str, number: int, solution: str, check: str):
    """A cell that runs one wrong answer and its check, and prints how the check took it."""
    code = f"""
def _wrong_answer_trial(_solution, _check):
    try:
        exec(compile(_solution, "wrong answer {number} to {key}", "exec"), globals())
    except Exception as error:
        return f"the wrong answer does not run: {{type(error).__name__}}: {{error}}"
    try:
        exec(compile(_check, "check of {key}", "exec"), globals())
    except AssertionError:
        return "rejected"
    except Exception as error:
        return f"the check crashed: {{type(error).__name__}}: {{error}}"
    return "accepted"
print({MARK!r}, {key!r}, {number}, _wrong_answer_trial({solution!r}, {check!r}))
"""
    return nbformat.v4.new_code_cell(code)


def check_cell_for(cells, index: int, key: str):
    """The check cell named `<key>-check`, else the first check cell after the solution."""
    later = [c for c in cells[index + 1:] if is_check(c)]
    named = [c for c in later if grade_id(c) == f"{key}-check"]
    if not (named or later):
        raise AssertionError(f"no check cell after the solution cell {key}")
    return (named or later)[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_two_plausible_wrong_answers(path):
    nb = nbformat.read(path, as_version=4)
    keys = [grade_id(c) for c in nb.cells if is_solution(c)]
    wrong = wrong_answers(path)
    assert wrong, f"{path.name}: no tests/wrong_answers/{path.stem}.py"
    assert set(wrong) <= set(keys), f"{path.name}: wrong answers for unknown exercises {set(wrong) - set(keys)}"
    for key in keys:
        assert len(wrong.get(key, [])) >= 2, f"{path.name}: {key} needs at least two wrong answers"
        assert len(set(wrong[key])) == len(wrong[key]), f"{path.name}: {key} repeats a wrong answer"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_check_rejects_the_wrong_answers_and_accepts_the_solution(path, tmp_path):
    wrong = wrong_answers(path)
    if not wrong:
        pytest.skip(f"{path.name}: no wrong answers to try (the test above fails for it)")
    nb = nbformat.read(path, as_version=4)
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.lstrip().startswith("# NBVAL_SKIP"):
            continue  # GPU or hub cells are not part of a CPU run
        if is_solution(cell) and grade_id(cell) in wrong:
            key = grade_id(cell)
            check = check_cell_for(nb.cells, index, key)
            for number, answer in enumerate(wrong[key]):
                cells.append(trial_cell(key, number, replace_region(cell.source, answer), check.source))
        cells.append(cell)
    nb.cells = cells
    # Run outside the repository, with the notebooks' helper modules beside it, as nbgrader would.
    for helper in (REPO / "notebooks").glob("*.py"):
        shutil.copy(helper, tmp_path / helper.name)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    verdicts, failures = {}, []
    for cell in nb.cells:
        printed = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        for line in printed.splitlines():
            if line.startswith(MARK):
                _, key, number, verdict = line.split(" ", 3)
                verdicts[(key, int(number))] = verdict
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            failures.append(f"{errors[0]['ename']}: {errors[0]['evalue']} in\n{cell.source[:300]}")
    assert not failures, f"{path.name}: the chapter with its solutions failed:\n" + "\n".join(failures)
    for key, answers in wrong.items():
        for number in range(len(answers)):
            verdict = verdicts.get((key, number), "never ran")
            assert verdict == "rejected", f"{path.name}: {key}, wrong answer {number}: {verdict}"
