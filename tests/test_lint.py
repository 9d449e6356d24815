"""The tools the project relies on instead of hand-written checks: ruff (lint, format) and deptry (dependencies).

Run here so that CI, which runs the README's test command, fails on lint. The same checks run before
each commit with pre-commit (.pre-commit-config.yaml). Configuration: pyproject.toml.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str) -> subprocess.CompletedProcess:
    if shutil.which(command[0]) is None:
        pytest.fail(f"{command[0]} is not installed; it is in requirements-test.txt: pip install -e '.[test]'")
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def test_ruff_check():
    done = run("ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format():
    done = run("ruff", "format", "--check", ".")
    assert done.returncode == 0, "run `ruff format .`:\n" + done.stdout + done.stderr


def test_deptry_finds_every_import_declared_and_every_requirement_used():
    done = run("deptry", ".")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Scanning" in done.stderr + done.stdout  # it ran on the project, not on nothing
