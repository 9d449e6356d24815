"""Binder builds what the notebooks need, and the README's Binder links open files that exist.

repo2docker is the tool Binder uses to turn this repository into an image. With `--no-build` it
only writes the Dockerfile it would build (printed with `--debug`): no Docker daemon is touched,
which the test makes sure of by pointing DOCKER_HOST at a socket that does not exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import escapism  # a dependency of repo2docker, used to read its escaped file names
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
README = ROOT / "README.md"
REPO = "perceiver-edu/perceiver-edu"  # placeholder owner/name until the repository is on GitHub
BRANCH = "main"
BINDER_URL = re.compile(r"https://mybinder\.org/v2/gh/[^\s)\]\"'>]+")


def binder_packages() -> set[str]:
    names = set()
    for raw in (BINDER / "requirements.txt").read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            names.add(canonicalize_name(Requirement(line).name))
    return names


@pytest.fixture(scope="module")
def repo2docker_run():
    env = dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock")
    return subprocess.run(
        [sys.executable, "-m", "repo2docker", "--no-build", "--debug", "."],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def dockerfile(repo2docker_run) -> list[str]:
    assert repo2docker_run.returncode == 0, repo2docker_run.stdout[-2000:] + repo2docker_run.stderr[-2000:]
    lines = repo2docker_run.stdout.splitlines()
    assert any(line.startswith("FROM ") for line in lines), "repo2docker printed no Dockerfile"
    return lines


def line_index(lines: list[str], pattern: str) -> int:
    """Index of the first Dockerfile line matching the regex `pattern` (fails when there is none)."""
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no Dockerfile line matches {pattern!r}")


def test_repo2docker_uses_python_311_from_runtime_txt(repo2docker_run, dockerfile):
    # repo2docker builds its conda base environment from a lock file per Python version. The COPY
    # line names that file '-'-escaped ('.' is '-2e', '/' is '-2f') with a '-hash' suffix.
    assert "python=3.11" in repo2docker_run.stderr
    sources = [line.split()[2] for line in dockerfile if line.startswith("COPY ") and "build_script_files/" in line]
    copied = [escapism.unescape(s.rsplit("-", 1)[0], escape_char="-") for s in sources]
    assert any(re.search(r"/environment\.py-3\.11-linux-\w+\.lock$", name) for name in copied), copied


def test_dockerfile_installs_binder_requirements_after_copying_the_repository(dockerfile):
    pip = line_index(dockerfile, r'^RUN \S*/pip install .*-r "?binder/requirements\.txt"?')
    copy_repo = line_index(dockerfile, r"^COPY .*\bsrc/ \$\{REPO_DIR\}/")
    workdir = line_index(dockerfile, r"^WORKDIR \$\{REPO_DIR\}")
    # `-e .` in binder/requirements.txt is a path relative to pip's working directory: the
    # repository must already be copied into REPO_DIR, and REPO_DIR must be the working directory.
    assert workdir < copy_repo < pip
    assert not any(re.match(r"^WORKDIR ", line) for line in dockerfile[workdir + 1 : pip])
    requirement_lines = [l.strip() for l in (BINDER / "requirements.txt").read_text().splitlines()]
    assert "-e ." in requirement_lines, "binder/requirements.txt must install the package (`-e .`)"


def test_dockerfile_installs_into_the_environment_the_notebook_server_runs(dockerfile):
    # With Python 3 the kernel and the notebook server share one environment, so what pip installs
    # (ipywidgets, voila) is visible to JupyterLab too.
    assert "ENV KERNEL_PYTHON_PREFIX=${NB_PYTHON_PREFIX}" in dockerfile


# ---------------------------------------------------------------------------------------------
# The README's links


def readme_binder_links() -> list[str]:
    return sorted(set(BINDER_URL.findall(README.read_text())))


def urlpath_of(url: str) -> str:
    query = parse_qs(urlsplit(url).query)
    assert "urlpath" in query, f"{url} opens no particular page (no urlpath=)"
    return unquote(query["urlpath"][0])


def test_readme_has_a_binder_badge_opening_chapter_one_in_jupyterlab():
    links = readme_binder_links()
    lab = [u for u in links if urlpath_of(u).startswith("lab/tree/notebooks/")]
    assert lab, f"README.md has no Binder link that opens a notebook in JupyterLab; found {links}"
    assert any(urlpath_of(u) == "lab/tree/notebooks/01_step_by_step.ipynb" for u in lab)
    assert "https://mybinder.org/badge_logo.svg" in README.read_text(), "the Binder badge image"


@pytest.mark.parametrize("url", readme_binder_links() or ["<none>"])
def test_readme_binder_link_is_well_formed_and_opens_a_file_that_exists(url):
    assert url != "<none>", "README.md has no mybinder.org link"
    parts = urlsplit(url)
    assert parts.path.rstrip("/") == f"/v2/gh/{REPO}/{BRANCH}", f"{url}: expected /v2/gh/{REPO}/{BRANCH}"
    urlpath = urlpath_of(url)
    match = re.fullmatch(r"(lab/tree|voila/render|doc/tree)/(.+)", urlpath)
    assert match, f"{url}: urlpath {urlpath!r} is neither lab/tree/..., doc/tree/... nor voila/render/..."
    interface, target = match.groups()
    assert (ROOT / target).is_file(), f"{url} opens {target}, which is not in the repository"
    if interface == "voila/render":
        assert "voila" in binder_packages(), f"{url} opens Voila but binder/requirements.txt has no voila"


def test_postbuild_installs_open_flamingo_without_its_torch_pin(dockerfile):
    # open-flamingo pins torch==2.0.1; with --no-deps it keeps Binder's CPU torch. Chapter 5 reads its helpers.py.
    pip = line_index(dockerfile, r'^RUN \S*/pip install .*-r "?binder/requirements\.txt"?')
    post = line_index(dockerfile, r"binder/postBuild")
    assert pip < post
    script = (BINDER / "postBuild").read_text()
    assert re.search(r'pip install .*--no-deps .*"?open-flamingo==2\.0\.1"?', script), script
    assert os.access(BINDER / "postBuild", os.X_OK), "repo2docker runs postBuild only when it is executable"
