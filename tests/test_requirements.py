"""The two requirement lists stay in step with what the code imports.

A learner installs perceiver-edu one of two ways: `pip install -e .` on their own machine (the root
requirements.txt, read by pyproject.toml) or a Binder link (binder/requirements.txt, read by
repo2docker, which then ignores pyproject.toml). A notebook that imports a package missing from
either list works on the author's machine and fails for the learner, so this test reads every
import in notebooks/*.ipynb and perceiver_edu/**/*.py, whatever notebooks exist when it runs, and
checks that each third-party one is listed in both files.
"""

from __future__ import annotations

import ast
import json
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ROOT_REQUIREMENTS = ROOT / "requirements.txt"
BINDER_REQUIREMENTS = ROOT / "binder" / "requirements.txt"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PACKAGE = "perceiver_edu"

# Import names whose distribution is not installed here, so packages_distributions() cannot say.
# Only a fallback: an installed distribution always wins.
KNOWN_DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "cv2": "opencv-python",
    "skimage": "scikit-image",
    "IPython": "ipython",
    "mpl_toolkits": "matplotlib",
}

# A distribution that another listed one always brings: a notebook runs in an IPython kernel, so
# listing ipykernel is what guarantees `from IPython.display import display`.
PROVIDED_BY = {"ipython": {"ipykernel"}}

# Packages Binder needs that a local install does not: chapter 5 compares the package with the references
# (transformers' Idefics2, lucidrains' flamingo-pytorch and what it imports), which a local install gets from
# the `test` extra; without them the chapter prints how to install them instead of comparing.
BINDER_ONLY: set[str] = {"transformers", "flamingo-pytorch", "einops-exts"}

# Imported only where the platform provides it: each chapter's Colab setup cell runs
# `from google.colab import output` only when `google.colab` is already loaded (tests/test_colab.py).
PLATFORM_PROVIDED: set[str] = {"google"}


# ---------------------------------------------------------------------------------------------
# Reading requirement files


def read_requirements(path: Path) -> tuple[dict[str, Requirement], list[str]]:
    """{canonical name: Requirement} and the option lines (`--extra-index-url ...`, `-e .`)."""
    requirements: dict[str, Requirement] = {}
    options: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            options.append(" ".join(line.split()))
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in requirements, f"{path.relative_to(ROOT)} lists {req.name} twice"
        requirements[name] = req
    return requirements, options


# ---------------------------------------------------------------------------------------------
# Collecting imports


def _guarded_by_import_error(handlers: list[ast.ExceptHandler]) -> bool:
    """True for `except ImportError` / `except ModuleNotFoundError` (an optional import)."""
    for handler in handlers:
        names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for name in names:
            if isinstance(name, ast.Name) and name.id in {"ImportError", "ModuleNotFoundError"}:
                return True
    return False


def imports_in_source(source: str) -> set[str]:
    """Top-level module names imported anywhere in `source` (inside functions too: a lazy
    `from sklearn.datasets import ...` still needs scikit-learn), except relative imports and
    imports inside `try: ... except ImportError:` which the code has planned to live without."""
    tree = ast.parse(source)
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and _guarded_by_import_error(node.handlers):
            for inner in node.body:
                optional.update(id(sub) for sub in ast.walk(inner))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def notebook_code(path: Path) -> str:
    """The code cells of a notebook as plain Python (magics like `%matplotlib inline` translated
    the way IPython runs them, so ast can parse the cell)."""
    from IPython.core.inputtransformer2 import TransformerManager

    transform = TransformerManager().transform_cell
    cells = json.loads(path.read_text())["cells"]
    sources = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        sources.append(transform(source))
    return "\n".join(sources)


def third_party(names: set[str]) -> set[str]:
    return {
        n for n in names if n not in sys.stdlib_module_names and n not in {PACKAGE, "__future__"} | PLATFORM_PROVIDED
    }


def project_imports() -> dict[str, list[str]]:
    """{top-level import name: [files that import it]} over the package and every notebook."""
    files = sorted((ROOT / PACKAGE).rglob("*.py")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
    where: dict[str, list[str]] = {}
    for path in files:
        source = notebook_code(path) if path.suffix == ".ipynb" else path.read_text()
        for name in third_party(imports_in_source(source)):
            where.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return where


def distributions_for(import_name: str) -> set[str]:
    """Canonical distribution names that provide `import_name` (empty when nothing here knows)."""
    installed = packages_distributions().get(import_name)
    if installed:
        return {canonicalize_name(d) for d in installed}
    if import_name in KNOWN_DISTRIBUTIONS:
        return {canonicalize_name(KNOWN_DISTRIBUTIONS[import_name])}
    return set()


def missing_from(listed: set[str], imports: dict[str, list[str]]) -> list[str]:
    problems = []
    for name, files in sorted(imports.items()):
        dists = distributions_for(name)
        if not dists:
            problems.append(f"`import {name}` ({', '.join(files)}): no installed distribution provides it")
            continue
        satisfied = dists & listed or {d for d in dists if PROVIDED_BY.get(d, set()) & listed}
        if not satisfied:
            problems.append(f"`import {name}` ({', '.join(files)}) needs {' or '.join(sorted(dists))}")
    return problems


# ---------------------------------------------------------------------------------------------
# The checks on the collector itself, so a broken collector cannot make the real checks pass


def test_collector_reads_magics_lazy_imports_and_skips_stdlib_and_optional(tmp_path):
    notebook = {
        "cells": [
            {"cell_type": "markdown", "source": "import not_code"},
            {"cell_type": "code", "source": ["%matplotlib inline\n", "import os, numpy as np\n"]},
            {"cell_type": "code", "source": "def f():\n    from sklearn.datasets import load_iris\n"},
            {"cell_type": "code", "source": "try:\n    import voila\nexcept ImportError:\n    voila = None\n"},
            {"cell_type": "code", "source": "from . import x\nfrom perceiver_edu import steps\n!echo hi\n"},
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(notebook))
    assert third_party(imports_in_source(notebook_code(path))) == {"numpy", "sklearn"}
    assert distributions_for("sklearn") == {"scikit-learn"}
    assert missing_from({"numpy"}, {"sklearn": ["nb.ipynb"]}) == ["`import sklearn` (nb.ipynb) needs scikit-learn"]
    assert missing_from({"ipykernel"}, {"IPython": ["nb.ipynb"]}) == []


def test_the_scan_sees_the_package_imports():
    # The package itself imports torch, einops and (lazily) scikit-learn; if the scan does not
    # see them it sees nothing, and the checks below would pass vacuously.
    assert {"torch", "einops", "sklearn"} <= set(project_imports())


# ---------------------------------------------------------------------------------------------
# The real checks


@pytest.mark.parametrize("path", [ROOT_REQUIREMENTS, BINDER_REQUIREMENTS], ids=["root", "binder"])
def test_every_import_is_listed(path):
    listed, _ = read_requirements(path)
    problems = missing_from(set(listed), project_imports())
    assert not problems, f"{path.relative_to(ROOT)} is missing:\n  " + "\n  ".join(problems)


def test_binder_lists_the_same_packages_as_root():
    root, _ = read_requirements(ROOT_REQUIREMENTS)
    binder, _ = read_requirements(BINDER_REQUIREMENTS)
    assert set(root) - set(binder) == set(), "in requirements.txt but not binder/requirements.txt"
    assert set(binder) - set(root) - BINDER_ONLY == set(), "in binder/requirements.txt but not requirements.txt"


def test_binder_versions_fit_the_root_ranges():
    root, _ = read_requirements(ROOT_REQUIREMENTS)
    binder, _ = read_requirements(BINDER_REQUIREMENTS)
    for name, req in root.items():
        pins = [s for s in binder[name].specifier if s.operator == "=="]
        if pins:  # an exact pin on Binder must be a version the root range allows
            assert Version(pins[0].version) in req.specifier, (
                f"binder pins {binder[name]} but requirements.txt asks for {req}"
            )
        else:  # otherwise the ranges are the same, so both installs resolve alike
            assert binder[name].specifier == req.specifier, f"binder has {binder[name]} but requirements.txt has {req}"


def test_binder_torch_is_the_cpu_build_from_the_cpu_index():
    root, _ = read_requirements(ROOT_REQUIREMENTS)
    binder, options = read_requirements(BINDER_REQUIREMENTS)
    torch = binder["torch"]
    specs = list(torch.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"binder torch must be one exact pin, got {torch}"
    version = Version(specs[0].version)
    assert version.local == "cpu", f"binder torch {version} is not a +cpu build (Binder would pull CUDA)"
    assert version in root["torch"].specifier, f"binder torch {version} is outside requirements.txt's {root['torch']}"
    assert version in SpecifierSet(">=2.0")  # sanity: a real release number, not a placeholder
    index_lines = [o for o in options if o.startswith(("--extra-index-url", "--index-url"))]
    assert any(o.split()[-1].rstrip("/") == TORCH_CPU_INDEX for o in index_lines), (
        f"binder/requirements.txt needs `--extra-index-url {TORCH_CPU_INDEX}` to find {version}"
    )


def test_binder_installs_the_package_itself():
    # repo2docker ignores the root pyproject.toml when binder/ exists and runs pip from the
    # repository root, so `-e .` is what makes `import perceiver_edu` work on Binder.
    _, options = read_requirements(BINDER_REQUIREMENTS)
    assert any(o in {"-e .", "--editable .", "--editable=."} for o in options), options
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
