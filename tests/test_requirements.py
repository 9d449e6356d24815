"""Binder's requirement list stays in step with the root one.

A learner installs perceiver-edu one of two ways: `pip install -e .` on their own machine (the root
requirements.txt, read by pyproject.toml) or a Binder link (binder/requirements.txt, read by
repo2docker, which then ignores pyproject.toml). That every import of the package and the notebooks
is declared in the root lists is deptry's job (configured in pyproject.toml, run by test_lint.py);
this file checks that Binder installs the same packages, at versions the root ranges allow.
"""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ROOT_REQUIREMENTS = ROOT / "requirements.txt"
BINDER_REQUIREMENTS = ROOT / "binder" / "requirements.txt"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# Packages Binder needs that a local install does not: chapter 5 compares the package with the references
# (transformers' Idefics2, lucidrains' flamingo-pytorch and what it imports), which a local install gets from
# the `test` extra; without them the chapter prints how to install them instead of comparing.
BINDER_ONLY: set[str] = {"transformers", "flamingo-pytorch", "einops-exts"}


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
