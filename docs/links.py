"""Where the project lives on the web, and every launch link derived from it.

The repository's address is written once, as `Repository` under `[project.urls]` in pyproject.toml.
Everything else comes from it: the README's Binder and Colab links (checked by tests/test_colab.py and tests/test_binder.py),
the book's launch links (docs/conf.py, docs/build.py) and the Colab setup cell of every chapter
(.ci/colab_cell.py).

    python docs/links.py    # prints the address, and the Binder and Colab links of every chapter
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
BRANCH = "main"  # the branch the launch links open
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """`https://github.com/OWNER/NAME`, read from `[project.urls] Repository` in pyproject.toml."""
    text = pyproject.read_text(encoding="utf-8")
    # tomllib only exists from Python 3.11; the project supports 3.10, and the line is simple
    section = re.search(r"^\[project\.urls\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    match = section and re.search(r'^Repository\s*=\s*"([^"]+)"', section.group(1), re.M)
    if not match:
        raise ValueError(
            f'{pyproject}: expected a `Repository = "https://github.com/OWNER/NAME"` line under '
            "[project.urls]; the launch links are derived from it"
        )
    url = match.group(1).rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(
            f"{pyproject}: Repository must be https://github.com/OWNER/NAME (Binder and Colab "
            f"open GitHub repositories), got {url!r}"
        )
    return url


def github_repo() -> str:
    """`OWNER/NAME`."""
    return repository_url().removeprefix("https://github.com/")


def binder_url(path: str, interface: str = "lab") -> str:
    """A mybinder.org link opening `path` (relative to the repository root) in JupyterLab or Voilà."""
    urlpath = {"lab": "lab/tree/", "voila": "voila/render/"}[interface] + path
    return f"https://mybinder.org/v2/gh/{github_repo()}/{BRANCH}?urlpath={quote(urlpath, safe='/')}"


def colab_url(path: str) -> str:
    """A Colab link opening the notebook at `path` (relative to the repository root) from GitHub."""
    return f"https://colab.research.google.com/github/{github_repo()}/blob/{BRANCH}/{path}"


def pip_requirement() -> str:
    """What Colab's setup cell installs: the package from the repository's launch branch."""
    return f"perceiver-edu @ git+{repository_url()}.git@{BRANCH}"


def chapters(root: Path = ROOT) -> list[Path]:
    """The chapters, in order: every notebooks/0*.ipynb."""
    return sorted((root / "notebooks").glob("0*.ipynb"))


def chapter_title(path: Path) -> str:
    """The first `# ` heading of the notebook (without its `Chapter N —` prefix), else the file name."""
    import json

    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return re.sub(r"^Chapter\s+\d+\s*[—–:-]\s*", "", line[2:].strip())
    return path.stem


def colab_badges_markdown(root: Path = ROOT) -> str:
    """The README's block of Colab badges, one line per chapter (README.md, between the colab markers)."""
    lines = []
    for path in chapters(root):
        rel = path.relative_to(root).as_posix()
        lines.append(
            f"[![Open {path.stem} in Colab]({COLAB_BADGE})]({colab_url(rel)}) **{path.stem}**: {chapter_title(path)}  "
        )
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(repository_url())
    for chapter in chapters():
        rel = chapter.relative_to(ROOT).as_posix()
        print(f"{rel}\n  Binder: {binder_url(rel)}\n  Colab:  {colab_url(rel)}")
