"""Colab: every chapter opens there through its badge, and its first code cell sets it up.

The repository's address is written once (pyproject.toml, `[project.urls] Repository`); the
README's Colab and Binder links and the setup cell are derived from it by docs/links.py and
.ci/colab_cell.py, and these tests check that what is committed matches. The setup cell is run
for real, in a fresh Python: outside Colab it must do nothing at all; under a stand-in for Colab
(a fake `google.colab` module, pip replaced by a recorder) it must install the package from the
repository and turn on the custom widget manager.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "docs"))
import links  # noqa: E402


def load_colab_cell():
    spec = importlib.util.spec_from_file_location("colab_cell", ROOT / ".ci" / "colab_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


colab_cell = load_colab_cell()
CHAPTERS = links.chapters()


# ---------------------------------------------------------------------------------------------
# One address, every link derived from it


def test_repository_address_is_read_from_pyproject(tmp_path):
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", links.repository_url())
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "x"\n\n[project.urls]\nRepository = "https://github.com/someone/fork"\n')
    assert links.repository_url(other) == "https://github.com/someone/fork"
    other.write_text('[project]\nname = "x"\n')
    with pytest.raises(ValueError, match=r"Repository.*\[project\.urls\]"):
        links.repository_url(other)


def test_links_open_the_right_path():
    rel = "notebooks/01_step_by_step.ipynb"
    repo = links.github_repo()
    assert links.colab_url(rel) == f"https://colab.research.google.com/github/{repo}/blob/{links.BRANCH}/{rel}"
    assert links.binder_url(rel) == f"https://mybinder.org/v2/gh/{repo}/{links.BRANCH}?urlpath=lab/tree/{rel}"
    assert links.binder_url("notebooks/03_explorer.ipynb", "voila").endswith(
        "?urlpath=voila/render/notebooks/03_explorer.ipynb"
    )


@pytest.mark.parametrize("chapter", [p.name for p in CHAPTERS])
def test_readme_has_a_colab_badge_for_the_chapter(chapter):
    rel = f"notebooks/{chapter}"
    badge = f"[![Open {Path(chapter).stem} in Colab]({links.COLAB_BADGE})]({links.colab_url(rel)})"
    assert badge in README.read_text(), (
        f"README.md has no Colab badge for {rel}: run `python .ci/colab_cell.py notebooks/0*.ipynb`"
    )


def test_every_github_link_in_the_readme_is_derived_from_the_address():
    text = README.read_text()
    repo = links.github_repo()
    colab = re.findall(r"https://colab\.research\.google\.com/github/([^/\s]+/[^/\s]+)/blob/([^/\s]+)/([^\s)]+)", text)
    binder = re.findall(r"https://mybinder\.org/v2/gh/([^/\s]+/[^/\s]+)/([^?\s)]+)", text)
    github = re.findall(r"https://github\.com/([^/\s)]+/[^/\s)#.]+)", text)
    assert colab and binder
    for found, branch, path in colab:
        assert (found, branch) == (repo, links.BRANCH), f"a Colab link opens {found}@{branch}"
        assert (ROOT / path).is_file(), f"a Colab link opens {path}, which is not in the repository"
    assert {(found, branch) for found, branch in binder} == {(repo, links.BRANCH)}
    assert set(github) <= {repo}, f"README.md names another repository: {set(github) - {repo}}"


# ---------------------------------------------------------------------------------------------
# The setup cell


def setup_cells(path: Path) -> list[tuple[int, dict]]:
    cells = json.loads(path.read_text())["cells"]
    return [(i, c) for i, c in enumerate(cells) if c["cell_type"] == "code" and "google.colab" in "".join(c["source"])]


@pytest.mark.parametrize("chapter", [p.name for p in CHAPTERS])
def test_every_chapter_starts_with_the_current_setup_cell(chapter):
    cells = json.loads((ROOT / "notebooks" / chapter).read_text())["cells"]
    first = next(c for c in cells if c["cell_type"] == "code")
    assert "".join(first["source"]) == colab_cell.setup_cell_source(), (
        f"{chapter}: the first code cell is not the current Colab setup cell; run "
        "`python .ci/colab_cell.py notebooks/0*.ipynb` and re-execute the chapter"
    )
    assert len(setup_cells(ROOT / "notebooks" / chapter)) == 1


HARNESS = textwrap.dedent("""
    import json, subprocess, sys, types
    calls = {"pip": [], "widgets": 0}
    def fake_run(args, **kwargs):
        calls["pip"].append(list(args))
        return subprocess.CompletedProcess(args, 0)
    subprocess.run = fake_run
    if sys.argv[1] == "colab":
        google = types.ModuleType("google"); colab = types.ModuleType("google.colab")
        output = types.ModuleType("google.colab.output")
        def enable_custom_widget_manager():
            calls["widgets"] += 1
        output.enable_custom_widget_manager = enable_custom_widget_manager
        colab.output = output; google.colab = colab
        sys.modules.update({"google": google, "google.colab": colab, "google.colab.output": output})
    before = set(sys.modules)
    namespace = {}
    exec(compile(sys.stdin.read(), "<setup cell>", "exec"), namespace)
    calls["imported"] = sorted(set(sys.modules) - before)
    calls["names"] = sorted(k for k in namespace if not k.startswith("__"))
    print(json.dumps(calls))
""")


def run_cell(where: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-I", "-c", HARNESS, where],
        input=colab_cell.setup_cell_source(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_setup_cell_does_nothing_outside_colab():
    calls = run_cell("jupyter")
    assert calls["pip"] == [] and calls["widgets"] == 0
    assert calls["imported"] == []  # not even an import: nothing new is loaded
    assert calls["names"] == ["sys"]


def test_setup_cell_on_colab_installs_the_package_and_turns_on_the_widget_manager():
    calls = run_cell("colab")
    assert calls["pip"] == [[sys.executable, "-m", "pip", "install", "-q", links.pip_requirement()]]
    assert links.pip_requirement() == f"perceiver-edu @ git+{links.repository_url()}.git@{links.BRANCH}"
    assert calls["widgets"] == 1


def test_colab_cell_script_inserts_once_updates_and_keeps_everything_else(tmp_path):
    path = tmp_path / CHAPTERS[0].name
    path.write_bytes(CHAPTERS[0].read_bytes())
    original = json.loads(path.read_text())
    others = [c for c in original["cells"] if "colab-setup" not in c.get("metadata", {}).get("tags", [])]
    colab_cell.update_notebook(path)
    once = path.read_bytes()
    assert colab_cell.update_notebook(path) is False and path.read_bytes() == once  # idempotent
    cells = json.loads(once)["cells"]
    first = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")
    assert "".join(cells[first]["source"]) == colab_cell.setup_cell_source()
    assert cells[:first] + cells[first + 1 :] == others  # nothing else moved or changed
    # a stale cell (an old address), placed second: refreshed and moved to the front
    stale = dict(cells[first], source=["# old\n", "import sys\n"], execution_count=3)
    code = [i for i, c in enumerate(others) if c["cell_type"] == "code"]
    moved = others[: code[1]] + [stale] + others[code[1] :]
    path.write_text(json.dumps({**json.loads(once), "cells": moved}))
    assert colab_cell.update_notebook(path) is True
    cells = json.loads(path.read_text())["cells"]
    assert [c for c in cells if "colab-setup" in c.get("metadata", {}).get("tags", [])] == [cells[code[0]]]
    assert "".join(cells[code[0]]["source"]) == colab_cell.setup_cell_source()
    assert cells[code[0]]["execution_count"] is None
