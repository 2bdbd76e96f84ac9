"""Write the student copies of the course notebooks: every solution region replaced by a stub.

    python scripts/make_student_copies.py                       # every notebook in notebooks/ -> student/
    python scripts/make_student_copies.py --out /tmp/s notebooks/04_rope.ipynb

In each code cell, the lines from `### BEGIN SOLUTION` to `### END SOLUTION` (markers included) become one
line, `raise NotImplementedError()`, indented like the BEGIN marker; the lines around the region (a `def`
line, a docstring) stay, so the student sees the signature and fills in the body. Outputs and execution
counts are cleared, and the nbgrader metadata is kept, so the copies also work with nbgrader. The
notebooks' helper modules (every `notebooks/*.py`: `course.py`, `previous_chapters.py`) are copied beside
them, so the copies run where they are.

A BEGIN without its END (or an END without a BEGIN) is refused with the notebook and cell named: a
half-stripped cell would hand the answer out.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError()"


class SolutionMarkerError(ValueError):
    """A solution region that is not closed, or closed without being opened."""


def strip_solutions(source: str, where: str = "this cell") -> str:
    """`source` with each BEGIN ... END SOLUTION region replaced by an indented NotImplementedError stub."""
    out: list[str] = []
    opened_at = None  # 1-based line number of the open BEGIN marker, None outside a region
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker.startswith(BEGIN):
            if opened_at is not None:
                raise SolutionMarkerError(f"{where}: line {number}: {BEGIN} inside the region opened at "
                                          f"line {opened_at}")
            opened_at = number
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + STUB)
        elif marker.startswith(END):
            if opened_at is None:
                raise SolutionMarkerError(f"{where}: line {number}: {END} without a {BEGIN} before it")
            opened_at = None
        elif opened_at is None:
            out.append(line)
    if opened_at is not None:
        raise SolutionMarkerError(f"{where}: line {opened_at}: {BEGIN} without {END}")
    return "\n".join(out)


def has_solutions(nb) -> bool:
    return any(c.cell_type == "code" and BEGIN in c.source for c in nb.cells)


def student_copy(nb, name: str = "notebook"):
    """A copy of `nb` with the solutions stubbed out and every output cleared (`nb` is left as it was)."""
    nb = nbformat.from_dict(nb)  # a deep copy
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.source = strip_solutions(cell.source, where=f"{name}, cell {index}")
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)  # nbclient's timestamps
    return nb


def make_student_copy(path: Path, out_dir: Path) -> Path:
    """Write the student copy of `path` into `out_dir`, with the notebooks' helper modules beside it."""
    nb = nbformat.read(path, as_version=4)
    student = student_copy(nb, name=str(path))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name
    nbformat.write(student, target)
    # every chapter does `import course`, later ones `from previous_chapters import ...`: the copies need them
    for helpers in sorted(path.parent.glob("*.py")):
        if helpers.resolve() != (out_dir / helpers.name).resolve():
            shutil.copyfile(helpers, out_dir / helpers.name)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to copy (default: every notebook in notebooks/ with solution cells)")
    parser.add_argument("--out", type=Path, default=REPO / "student", help="output folder (default: student/)")
    args = parser.parse_args(argv)
    paths = args.notebooks or [p for p in sorted((REPO / "notebooks").glob("*.ipynb"))
                               if has_solutions(nbformat.read(p, as_version=4))]
    try:
        for path in paths:
            print(f"{path} -> {make_student_copy(path, args.out)}")
    except SolutionMarkerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
