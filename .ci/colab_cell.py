"""Give every chapter its Colab setup cell, and the README its Colab badges; safe to run again.

    python .ci/colab_cell.py notebooks/0*.ipynb

For each notebook named, the setup cell becomes the FIRST code cell: inserted before the first code
cell where there is none, its text refreshed where there is one (found by its tag `colab-setup`),
moved up where another code cell came before it. Nothing else in the notebook changes, so a notebook
that already has the current cell is left byte for byte as it was. Then the README's block between
<!-- colab-badges --> and <!-- /colab-badges --> is rewritten with one badge per notebooks/0*.ipynb.

The cell's text is made from the repository address in pyproject.toml (docs/links.py). On Colab
it installs the package from the repository (torch is already there) and turns on Colab's custom
widget manager, which ipywidgets 8 needs; anywhere else (JupyterLab, Binder, nbval) it does nothing.
After inserting it, re-execute the chapters (.ci/execute_notebooks.py) so the cell has its run count.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import links  # noqa: E402  (docs/links.py: the repository address and what is derived from it)

TAG = "colab-setup"
README_BLOCK = re.compile(r"(<!-- colab-badges -->\n)(.*?)(<!-- /colab-badges -->)", re.S)


def setup_cell_source() -> str:
    """The text of the setup cell: plain Python (no `%pip`), so that it runs the same anywhere."""
    return f'''\
# Colab setup: on Google Colab, install perceiver-edu from its repository (torch is already there)
# and turn on Colab's widget manager, which ipywidgets 8 needs. Anywhere else this cell does nothing.
import sys

if "google.colab" in sys.modules:
    import importlib, subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "{links.pip_requirement()}"], check=True)
    importlib.invalidate_caches()  # so that this kernel finds the package just installed
    from google.colab import output
    output.enable_custom_widget_manager()'''


def setup_cell() -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": "colab-setup",
        "metadata": {"tags": [TAG]},
        "outputs": [],
        "source": setup_cell_source().splitlines(keepends=True),
    }


def is_setup_cell(cell: dict) -> bool:
    return cell.get("cell_type") == "code" and TAG in cell.get("metadata", {}).get("tags", [])


def with_setup_cell(nb: dict) -> dict:
    """The notebook (a JSON dict) with the current setup cell as its first code cell."""
    cells = nb["cells"]
    old = [c for c in cells if is_setup_cell(c)]
    cell = old[0] if old else setup_cell()
    if "".join(cell["source"]) != setup_cell_source():
        cell["source"] = setup_cell_source().splitlines(keepends=True)
        cell["outputs"], cell["execution_count"] = [], None
    rest = [c for c in cells if not is_setup_cell(c)]
    first_code = next((i for i, c in enumerate(rest) if c["cell_type"] == "code"), len(rest))
    if nb.get("nbformat_minor", 0) < 5:  # cell ids exist from nbformat 4.5 on
        cell.pop("id", None)
    elif any(c.get("id") == cell.get("id") for c in rest):
        cell["id"] = f"{TAG}-{len(cells)}"
    return {**nb, "cells": rest[:first_code] + [cell] + rest[first_code:]}


def update_notebook(path: Path) -> bool:
    """Insert or refresh the setup cell in `path`; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    new = with_setup_cell(copy.deepcopy(nb))
    if new == nb:
        return False
    path.write_text(nbformat.writes(nbformat.from_dict(new)) + "\n", encoding="utf-8")  # as Jupyter writes it
    return True


def update_readme(readme: Path = ROOT / "README.md") -> bool:
    text = readme.read_text(encoding="utf-8")
    if not README_BLOCK.search(text):
        raise SystemExit(f"{readme}: no <!-- colab-badges --> ... <!-- /colab-badges --> block to fill")
    new = README_BLOCK.sub(lambda m: m.group(1) + links.colab_badges_markdown() + m.group(3), text)
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for name in sys.argv[1:]:
        print(f"{name}: {'setup cell written' if update_notebook(Path(name)) else 'already up to date'}")
    print(f"README.md: {'Colab badges written' if update_readme() else 'Colab badges already up to date'}")
