"""Execute notebooks once, top to bottom, in a fresh kernel, and store their outputs.

    python scripts/execute_notebook.py notebooks/04_rope.ipynb [more.ipynb ...]

Unlike `jupyter nbconvert --execute`, cells marked `# NBVAL_SKIP` (they need a GPU or the hub) are left
unrun with no stored output, as notebooks/AUTHORING.md asks. The kernel runs in the notebook's folder.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def is_skipped(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith("# NBVAL_SKIP")


def execute(path: Path, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    for cell in cells:
        if is_skipped(cell):
            cell.outputs, cell.execution_count = [], None
    nb.cells = [c for c in cells if not is_skipped(c)]
    started = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
    ran = iter(nb.cells)
    nb.cells = [c if is_skipped(c) else next(ran) for c in cells]
    nbformat.write(nb, path)
    return time.time() - started


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for name in sys.argv[1:]:
        print(f"{name}: executed in {execute(Path(name)):.1f} s")
