"""Execute notebooks top to bottom in a fresh kernel, in place, the way they are committed.

    python .ci/execute_notebooks.py notebooks/02_attention_maps.ipynb [more.ipynb ...]

Each notebook runs in its own fresh kernel with notebooks/ as the working directory (as JupyterLab
and nbval run it). Per-cell timing metadata is stripped so that a re-run changes only what the
cells print and draw. Prints the wall time of each notebook (the chapters' budget is 60 s).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)  # saved widget state is not restored by JupyterLab; keep files small
    nbformat.write(nb, path)
    return seconds


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for name in sys.argv[1:]:
        print(f"{name}: {execute(Path(name)):.1f} s", flush=True)
