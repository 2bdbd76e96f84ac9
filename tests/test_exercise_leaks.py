"""The leak check: an exercise's answer may not stand in its chapter's student copy or in minicohere's source."""

from __future__ import annotations

import sys

import nbformat
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from exercise_leaks import DEFAULT_BOUND, EXPR_BOUND, cross_chapter, find_package, main, measure  # noqa: E402

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))

ANSWER = ("def spread(values):\n"
          "    '''Largest minus smallest, over the last axis.'''\n"
          "    ### BEGIN SOLUTION\n"
          "    # a comment is not counted\n"
          "    import torch\n"
          "    top = values.amax(dim=-1, keepdim=True)\n"
          "    bottom = values.amin(dim=-1, keepdim=True)\n"
          "    out = top - bottom\n"
          "    return out\n"
          "    ### END SOLUTION\n")


def make_repo(tmp_path, lesson: str, package: str = "VALUE = 1\n", name: str = "99_x.ipynb", answer: str = ANSWER):
    """A repository in miniature: notebooks/99_x.ipynb (a lesson cell + one exercise) and minicohere/."""
    (tmp_path / "minicohere").mkdir(exist_ok=True)
    (tmp_path / "minicohere" / "__init__.py").write_text(package)
    (tmp_path / "notebooks").mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook()
    solution = nbformat.v4.new_code_cell(answer, metadata={"nbgrader": {"grade": False, "grade_id": "ex-99-1",
                                                                         "solution": True}})
    nb.cells = [nbformat.v4.new_code_cell(lesson), solution]
    path = tmp_path / "notebooks" / name
    nbformat.write(nb, path)
    return path


def test_an_answer_nowhere_else_has_no_leak(tmp_path):
    [leak] = measure(make_repo(tmp_path, "x = torch.randn(3, 4)\nprint(x.shape)"))
    # three counted lines: the comment, the import and `return out` are trivia every answer shares
    assert (leak.exercise, leak.lines, leak.verbatim, leak.renamed, leak.share) == ("ex-99-1", 3, 0, 0, 0.0)


def test_a_line_shown_in_the_lesson_is_a_verbatim_leak(tmp_path):
    [leak] = measure(make_repo(tmp_path, "top  =  values.amax(dim=-1, keepdim=True)   # shown here"))
    assert (leak.verbatim, leak.renamed) == (1, 0) and leak.share == pytest.approx(1 / 3)
    assert leak.found[0][2] == "99_x.ipynb cell 0:1"


def test_a_renamed_copy_is_caught(tmp_path):
    lesson = "hi = scores.amax(dim=-1, keepdim=True)\nlo = scores.amin(dim=-1, keepdim=True)"
    [leak] = measure(make_repo(tmp_path, lesson))
    assert (leak.verbatim, leak.renamed) == (0, 2)


def test_a_renamed_method_is_not_a_copy(tmp_path):
    # Same shape, other operation: attributes are kept when names are replaced.
    [leak] = measure(make_repo(tmp_path, "hi = scores.mean(dim=-1, keepdim=True)"))
    assert leak.verbatim + leak.renamed == 0


def test_the_package_source_counts_and_is_found_beside_the_notebook(tmp_path):
    path = make_repo(tmp_path, "pass", package="def f(values):\n    out = top - bottom\n    return out\n")
    assert find_package(path) == tmp_path / "minicohere"
    [leak] = measure(path)
    assert leak.verbatim == 1 and leak.found[0][2] == "minicohere/__init__.py:2"


def test_the_solution_itself_is_not_counted_as_visible(tmp_path):
    # The student copy has the region stubbed: the answer does not leak into itself.
    [leak] = measure(make_repo(tmp_path, "pass"))
    assert leak.share == 0.0


def test_the_command_line_fails_above_the_bound_and_names_the_line(tmp_path, capsys):
    path = make_repo(tmp_path, "top = values.amax(dim=-1, keepdim=True)")
    assert main([str(path), "--bound", "0.5"]) == 0
    assert main([str(path), "--bound", "0.2"]) == 1
    printed = capsys.readouterr().out
    assert "OVER" in printed and "values.amax" in printed and "99_x.ipynb cell 0:1" in printed


def test_a_notebook_outside_any_repository_is_refused(tmp_path, capsys):
    nb = nbformat.v4.new_notebook()
    nbformat.write(nb, tmp_path / "lonely.ipynb")
    assert main([str(tmp_path / "lonely.ipynb")]) == 2
    assert "no minicohere/ package" in capsys.readouterr().err


def test_the_same_answer_in_two_chapters_is_caught(tmp_path, capsys):
    first = make_repo(tmp_path, "pass")
    renamed = ANSWER.replace("values", "scores").replace("top", "hi")
    second = make_repo(tmp_path, "pass", name="98_y.ipynb", answer=renamed)
    results = {first: measure(first), second: measure(second)}
    cross_chapter(results)
    # amax and amin lines match renamed; `out = hi - bottom` is too short to tell apart from other code
    assert [leak.other for leak in results[first]] == [2] and results[first][0].other_found[0][2] == "98_y.ipynb ex-99-1"
    assert main([str(first)]) == 0                  # alone, the chapter is clean
    assert main([str(first), str(second)]) == 1     # together, one repeats the other
    assert "OVER" in capsys.readouterr().out


def test_every_chapter_asks_its_own_exercises():
    results = {path: measure(path) for path in NOTEBOOKS}
    cross_chapter(results)
    same = [f"{path.name} {leak.exercise}: {leak.other} of {leak.lines} lines, e.g. {leak.other_found[0][0]!r} <- "
            f"{leak.other_found[0][2]}" for path, leaks in results.items() for leak in leaks
            if leak.other_share > DEFAULT_BOUND]
    assert not same, "exercises repeated across chapters:\n" + "\n".join(same)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_exercise_answer_is_visible_in_the_student_copy_or_the_package(path):
    leaks = measure(path)
    assert leaks, f"{path.name}: no solution regions"
    over = [f"{leak.exercise}: {leak.share:.2f} of {leak.lines} lines, e.g. {leak.found[0][0]!r} <- {leak.found[0][2]}"
            for leak in leaks if leak.share > DEFAULT_BOUND]
    assert not over, f"{path.name}: answers visible elsewhere:\n" + "\n".join(over)


RESTYLED = ("def spread(values):\n"
            "    ### BEGIN SOLUTION\n"
            "    return (values.amax(dim=-1,\n"
            "                        keepdim=True) - values.amin(dim=-1,\n"
            "                                                    keepdim=True)).squeeze(-1).clamp(min=0.5)\n"
            "    ### END SOLUTION\n")


def test_a_restyled_copy_of_lesson_expressions_is_caught_by_the_expression_measure(tmp_path):
    # The lesson computes the same thing on one line with other names; the answer renames and rewraps it,
    # so no line of it matches any line shown, but its expressions do.
    lesson = "width = (scores.amax(dim=-1, keepdim=True) - scores.amin(dim=-1, keepdim=True)).squeeze(-1)"
    [leak] = measure(make_repo(tmp_path, lesson, answer=RESTYLED))
    assert leak.verbatim + leak.renamed == 0                        # the line-based measure misses it
    assert leak.expr > EXPR_BOUND and leak.over(DEFAULT_BOUND)
    assert leak.expr_found[0][2].startswith("99_x.ipynb cell 0")
    (tmp_path / "other").mkdir()
    [clean] = measure(make_repo(tmp_path / "other", "width = scores.std(dim=-1)", answer=RESTYLED))
    assert clean.expr == 0.0 and not clean.over(DEFAULT_BOUND)


def test_the_course_helper_modules_count_as_visible(tmp_path):
    path = make_repo(tmp_path, "pass")
    (path.parent / "previous_chapters.py").write_text(
        "def f(values):\n    top = values.amax(dim=-1, keepdim=True)\n    return top\n")
    [leak] = measure(path)
    assert leak.verbatim == 1 and leak.found[0][2] == "previous_chapters.py:2"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_answer_can_be_assembled_from_expressions_shown_elsewhere(path):
    results = {p: measure(p) for p in NOTEBOOKS}
    cross_chapter(results)
    over = [f"{leak.exercise}: {leak.expr:.2f} of its tokens visible, {leak.expr_other:.2f} in other answers, e.g. "
            f"{(leak.expr_found + leak.other_found)[0]}" for leak in results[path]
            if leak.expr > EXPR_BOUND or leak.expr_other > EXPR_BOUND]
    assert not over, f"{path.name}: answers assembled from visible expressions:\n" + "\n".join(over)
