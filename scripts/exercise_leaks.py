"""How much of each exercise's answer a student can already read: in the student copy, or in minicohere.

    python scripts/exercise_leaks.py notebooks/02_embeddings.ipynb [more.ipynb ...] [--bound 0.2] [-v]

For every solution region (the lines between `### BEGIN SOLUTION` and `### END SOLUTION` in a cell whose
nbgrader metadata says `"solution": true`), the answer's *non-trivial* lines are compared with every line
a student can see:

- the student copy of the notebook (solutions replaced by stubs, exactly as scripts/make_student_copies.py
  writes it): its code cells, and the code in its markdown (fenced blocks and `inline spans`);
- the helper module beside the notebook (`course.py`), and every `.py` file of the package `minicohere/`
  of the repository the *notebook* lives in (found by walking up from the notebook, not from this script,
  so one checkout can check another's notebooks).

A line counts as leaked when it appears there *verbatim* (after folding whitespace and dropping comments)
or *renamed*: equal after every local name is replaced by a placeholder (attributes after a dot, keyword
arguments, keywords, builtins and module names like `torch` are kept: a renamed copy keeps
`torch.cat(..., dim=-1)`, it changes `x` to `h`), for lines specific enough to tell apart from any other
code (see `renamed_key`). Trivial lines are not counted
at all: blank lines, comments, docstring-only lines, imports, `def` / `class` headers and
`super().__init__()` (the frame around an answer, which a student copy shows anyway), and lines of at most
TRIVIAL_MAX_TOKENS tokens (`return out`, `else:`, `x = y`), which any answer shares with any code.

Given several notebooks, each answer is also compared with the *other* notebooks' answers (no two
exercises the same across chapters): the column `other` counts its lines found, verbatim or renamed, in
another chapter's solution, and that share has the same bound.

Lines are not the only way to copy: an answer can be a lesson's expression renamed and wrapped
differently, or two half-lines joined. So each answer is also read as one stream of tokens (non-trivial
lines only, line breaks ignored, local names replaced as above), and every window of NGRAM tokens with at
least two informative tokens is looked up among the windows of everything visible (and of the other
chapters' answers). The columns `expr` and `expr-other` give the share of the answer's tokens that lie in
such a window; a share above EXPR_BOUND (0.5) fails: more than half of the answer can be assembled from
expressions a student can read.

The table gives, per exercise, the non-trivial lines, how many are seen verbatim, how many renamed, and the
leaked share. The exit status is 1 when a share exceeds the bound (default 0.2: one line in five of an
answer may coincide with something shown, e.g. a loop header or a call of the chapter's own function, but
a short answer (up to four lines) may share none, and any more means the student copies, not derives), 2
for a notebook or package that cannot be read.
"""

from __future__ import annotations

import argparse
import builtins
import io
import keyword
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_student_copies import BEGIN, END, SolutionMarkerError, student_copy  # noqa: E402

DEFAULT_BOUND = 0.2
TRIVIAL_MAX_TOKENS = 3     # `return out` (2), `else :` (2), `x = y` (3): shared by any two programs
RENAMED_MIN_TOKENS = 6     # below this, `ID = ID ( ID )` matches half of any code base

# One token: a string literal (kept whole, so a `#` inside it is not a comment), a number, a name, or
# an operator / punctuation character (multi-character operators listed first).
TOKEN = re.compile(r"""
    (?P<str>[rbuf]{0,2}(?:'''|\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"))
  | (?P<num>\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?j?|\.\d+(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<comment>\#.*)
  | (?P<op>\*\*=?|//=?|>>=?|<<=?|->|:=|[-+*/%@&|^<>=!]=|[^\s])
""", re.VERBOSE | re.IGNORECASE)

MODULE_NAMES = {"torch", "nn", "F", "np", "math", "functools", "itertools", "json", "re", "regex", "struct"}
KEPT_NAMES = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | MODULE_NAMES | {"self", "cls"}


def tokens(line: str) -> list[tuple[str, str]]:
    """(kind, text) tokens of one line of Python, comments dropped."""
    out = []
    for m in TOKEN.finditer(line):
        kind = m.lastgroup
        if kind == "comment":
            break
        out.append((kind, m.group()))
    return out


def is_trivial(toks: list[tuple[str, str]]) -> bool:
    if len(toks) <= TRIVIAL_MAX_TOKENS:
        return True
    first = toks[0][1]
    if first in ("import", "from") and any(t == "import" for _, t in toks):
        return True
    if first in ("def", "class", "async") or (first == "super" and "__init__" in (t for _, t in toks[:6])):
        return True     # a header or `super().__init__(...)`: the frame of an answer, not the answer
    if all(kind == "str" or text in "()," for kind, text in toks):  # a docstring or a string-only line
        return True
    return False


def verbatim_key(toks) -> str:
    return " ".join(text for _, text in toks)


# Attributes every program uses: a renamed line made only of these says nothing about the answer.
GENERIC_ATTRIBUTES = {"append", "extend", "items", "keys", "values", "get", "pop", "add", "update", "join",
                      "split", "strip", "format", "shape", "copy", "insert", "remove", "startswith", "endswith"}


def renamed_key(toks) -> str | None:
    """The line with local names replaced by `ID`; None when it cannot be told apart from other code.

    Kept: keywords, builtins, common module names, attribute names (after a dot) and keyword-argument
    names (`dim=`), which a renamed copy keeps. A line qualifies when it has at least RENAMED_MIN_TOKENS
    tokens and at least one *informative* token: an attribute or keyword argument not in
    GENERIC_ATTRIBUTES, a module name, a string, or a number other than 0 and 1. So
    `centred = xf - xf.mean(-1, keepdim=True)` qualifies; `out, i = [], 0`, `while k < len(nodes):`
    and `for key, value in table.items():` do not: any two programs share them.
    """
    if len(toks) < RENAMED_MIN_TOKENS:
        return None
    out = normalised(toks)
    return " ".join(text for text, _ in out) if any(weight for _, weight in out) else None


NGRAM = 10                 # tokens in one expression window: a call with its arguments, `ID . mean ( - 1 , keepdim = True )`
EXPR_BOUND = 0.5           # share of an answer's tokens covered by windows seen elsewhere


def normalised(toks) -> list[tuple[str, bool]]:
    """(token, informativeness) per token: local names become `ID`, as in `renamed_key`, and informative
    marks what a renamed copy keeps and other code rarely shares (attributes, keyword arguments, module
    names, strings, numbers other than 0 and 1)."""
    out = []
    for k, (kind, text) in enumerate(toks):
        previous = toks[k - 1][1] if k else ""
        following = toks[k + 1][1] if k + 1 < len(toks) else ""
        informative = 0          # 2: an attribute, module, string or number; 1: a keyword argument
        if kind == "name":
            if previous == ".":
                informative = 2 * (text not in GENERIC_ATTRIBUTES)
            elif following == "=" and previous in ("(", ","):
                informative = 1
            elif text in MODULE_NAMES:
                informative = 2
            elif text not in KEPT_NAMES:
                text = "ID"
        elif kind == "str" or (kind == "num" and text not in ("0", "1")):
            informative = 2
        out.append((text, informative))
    return out


def stream(lines) -> list[tuple[str, bool]]:
    """The normalised tokens of the non-trivial lines, one stream across line breaks: an expression
    that a copy wraps differently, or splits over two lines, keeps the same windows."""
    out = []
    for line in lines:
        toks = tokens(line)
        if not is_trivial(toks):
            out.extend(normalised(toks))
    return out


def windows(toks: list[tuple[str, bool]]):
    """(start, window) for each NGRAM-token window with two informative tokens, one of them more than a
    keyword argument (`(dim=-1, keepdim=True)` alone is in any code base)."""
    for start in range(len(toks) - NGRAM + 1):
        window = toks[start:start + NGRAM]
        weights = [informative for _, informative in window]
        if max(weights) == 2 and sum(w > 0 for w in weights) >= 2:
            yield start, tuple(text for text, _ in window)


def covered_share(toks, seen: dict) -> tuple[float, list[tuple[str, str]]]:
    """Share of `toks` inside a window found in `seen`, and (the window's text, where) for each hit."""
    covered, hits = set(), []
    for start, window in windows(toks):
        if window in seen:
            covered.update(range(start, start + NGRAM))
            if not hits or hits[-1][1] != seen[window]:
                hits.append((" ".join(window), seen[window]))
    return (len(covered) / len(toks) if toks else 0.0), hits


@dataclass
class Visible:
    """Every line a student can read, by normalised form, with where it was first seen."""
    verbatim: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    expressions: dict[tuple, str] = field(default_factory=dict)   # NGRAM-token windows (see `windows`)

    def add_windows(self, lines, where: str) -> None:
        for _, window in windows(stream(lines)):
            self.expressions.setdefault(window, where)

    def add(self, line: str, where: str) -> None:
        self.add_windows([line], where)
        toks = tokens(line)
        if is_trivial(toks):
            return
        self.verbatim.setdefault(verbatim_key(toks), where)
        key = renamed_key(toks)
        if key is not None:
            self.renamed.setdefault(key, where)

    def add_text(self, text: str, where: str) -> None:
        lines = text.split("\n")
        for number, line in enumerate(lines, start=1):
            self.add(line, f"{where}:{number}")
        self.add_windows(lines, where)       # windows across line breaks too


def markdown_code(text: str) -> list[str]:
    """The code a markdown cell shows: lines of fenced blocks, and each `inline span`."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            lines.append(line)
        else:
            lines.extend(re.findall(r"`+([^`]+)`+", line))
    return lines


def find_package(notebook: Path) -> Path:
    """`minicohere/` of the repository holding `notebook` (walking up from the notebook itself)."""
    for folder in notebook.resolve().parents:
        candidate = folder / "minicohere"
        if (candidate / "__init__.py").is_file():
            return candidate
    raise FileNotFoundError(f"{notebook}: no minicohere/ package found in any folder above the notebook")


def solution_regions(nb, name: str):
    """(exercise id, cell index, [lines]) for each solution region of an nbgrader solution cell."""
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("solution", False):
            continue
        grade_id = meta.get("grade_id", f"cell-{index}")
        regions, current = [], None
        for number, line in enumerate(cell.source.split("\n"), start=1):
            marker = line.strip()
            if marker.startswith(BEGIN):
                current = []
            elif marker.startswith(END):
                if current is None:
                    raise SolutionMarkerError(f"{name}, cell {index}: line {number}: {END} without {BEGIN}")
                regions.append(current)
                current = None
            elif current is not None:
                current.append(line)
        if current is not None:
            raise SolutionMarkerError(f"{name}, cell {index}: {BEGIN} without {END}")
        for k, lines in enumerate(regions):
            yield (grade_id if len(regions) == 1 else f"{grade_id}#{k + 1}"), index, lines


def visible_lines(nb, notebook: Path, package: Path) -> Visible:
    seen = Visible()
    copy = student_copy(nb, notebook.name)
    for index, cell in enumerate(copy.cells):
        where = f"{notebook.name} cell {index}"
        if cell.cell_type == "code":
            seen.add_text(cell.source, where)
        elif cell.cell_type == "markdown":
            for line in markdown_code(cell.source):
                seen.add(line, where)
    helpers = sorted(notebook.parent.glob("*.py"))    # course.py, previous_chapters.py
    sources = helpers + sorted(package.rglob("*.py"))
    for path in sources:
        where = path.name if path in helpers else str(path.relative_to(package.parent))
        seen.add_text(path.read_text(encoding="utf-8"), where)
    return seen


@dataclass
class Leak:
    exercise: str
    cell: int
    lines: int
    verbatim: int
    renamed: int
    found: list[tuple[str, str, str]]   # (answer line, how, where)
    other: int = 0                      # lines equal to another chapter's answer (see cross_chapter)
    other_found: list[tuple[str, str, str]] = field(default_factory=list)
    keys: list[tuple[str, str | None, str]] = field(default_factory=list)  # (verbatim, renamed, line)
    expr: float = 0.0                   # share of the answer's tokens in an expression seen elsewhere
    expr_found: list[tuple[str, str]] = field(default_factory=list)
    expr_other: float = 0.0             # the same share against the other chapters' answers
    tokens: list = field(default_factory=list)   # the answer's normalised token stream

    @property
    def share(self) -> float:
        return (self.verbatim + self.renamed) / self.lines if self.lines else 0.0

    @property
    def other_share(self) -> float:
        return self.other / self.lines if self.lines else 0.0

    def over(self, bound: float) -> bool:
        return (self.share > bound or self.other_share > bound
                or self.expr > EXPR_BOUND or self.expr_other > EXPR_BOUND)


def cross_chapter(results: dict[Path, list[Leak]]) -> None:
    """Fill in `other`: each answer's lines that also stand in another notebook's answer."""
    answers: dict[Path, Visible] = {}
    for path, leaks in results.items():
        seen = Visible()
        for leak in leaks:
            for verbatim, renamed, _ in leak.keys:
                seen.verbatim.setdefault(verbatim, f"{path.name} {leak.exercise}")
                if renamed is not None:
                    seen.renamed.setdefault(renamed, f"{path.name} {leak.exercise}")
        answers[path] = seen
    for path, leaks in results.items():
        for leak in leaks:
            leak.other, leak.other_found = 0, []
            for verbatim, renamed, line in leak.keys:
                for other_path, seen in answers.items():
                    if other_path == path:
                        continue
                    where = seen.verbatim.get(verbatim) or (seen.renamed.get(renamed) if renamed else None)
                    if where:
                        leak.other += 1
                        leak.other_found.append((line, "other", where))
                        break
    every = {path: {window: f"{path.name} {leak.exercise}" for leak in leaks for _, window in windows(leak.tokens)}
             for path, leaks in results.items()}
    for path, leaks in results.items():
        others = {}
        for other_path, seen in every.items():
            if other_path != path:
                others.update(seen)
        for leak in leaks:
            leak.expr_other, hits = covered_share(leak.tokens, others)
            leak.other_found += [(text, "expr", where) for text, where in hits]


def measure(notebook: Path, package: Path | None = None) -> list[Leak]:
    nb = nbformat.read(notebook, as_version=4)
    package = package or find_package(notebook)
    seen = visible_lines(nb, notebook, package)
    results = []
    for exercise, index, lines in solution_regions(nb, str(notebook)):
        counted = verbatim = renamed = 0
        found, keys = [], []
        for line in lines:
            toks = tokens(line)
            if is_trivial(toks):
                continue
            counted += 1
            keys.append((verbatim_key(toks), renamed_key(toks), line.strip()))
            if verbatim_key(toks) in seen.verbatim:
                verbatim += 1
                found.append((line.strip(), "verbatim", seen.verbatim[verbatim_key(toks)]))
            elif (key := renamed_key(toks)) is not None and key in seen.renamed:
                renamed += 1
                found.append((line.strip(), "renamed", seen.renamed[key]))
        toks = stream(lines)
        expr, hits = covered_share(toks, seen.expressions)
        results.append(Leak(exercise, index, counted, verbatim, renamed, found, keys=keys, expr=expr,
                            expr_found=[(text, "expr", where) for text, where in hits], tokens=toks))
    return results


def report(notebook: Path, leaks: list[Leak], bound: float, verbose: bool, out=None) -> bool:
    """Print the table for one notebook; True when every exercise is within the bound."""
    out = out or sys.stdout
    print(f"{notebook}", file=out)
    if not leaks:
        print("  (no solution regions)", file=out)
        return True
    print(f"  {'exercise':<16} {'cell':>4} {'lines':>5} {'verbatim':>8} {'renamed':>7} {'share':>6} {'other':>5} "
          f"{'expr':>5} {'expr-other':>10}", file=out)
    ok = True
    for leak in leaks:
        over = leak.over(bound)
        ok &= not over
        flag = "  OVER" if over else ""
        print(f"  {leak.exercise:<16} {leak.cell:>4} {leak.lines:>5} {leak.verbatim:>8} {leak.renamed:>7} "
              f"{leak.share:>6.2f} {leak.other:>5} {leak.expr:>5.2f} {leak.expr_other:>10.2f}{flag}", file=out)
        if over or verbose:
            for line, how, where in leak.found + leak.expr_found + leak.other_found:
                print(f"      {how:<8} {line[:70]!r}  <- {where}", file=out)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--bound", type=float, default=DEFAULT_BOUND,
                        help=f"largest share of an answer's lines that may be visible (default {DEFAULT_BOUND})")
    parser.add_argument("--package", type=Path, default=None,
                        help="the minicohere/ folder to compare with (default: the one above each notebook)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every leaked line, not only the failing ones")
    args = parser.parse_args(argv)
    results = {}
    for path in args.notebooks:
        try:
            results[path] = measure(path, args.package)
        except (OSError, SolutionMarkerError, nbformat.reader.NotJSONError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 2
    cross_chapter(results)
    ok = True
    for path, leaks in results.items():
        ok &= report(path, leaks, args.bound, args.verbose)
    if not ok:
        print(f"FAIL: some answers are more than {args.bound:.0%} visible in the student copy or the package, "
              "or the same as another chapter's", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
