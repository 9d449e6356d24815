"""Build the book: every chapter as a web page, from the stored, executed notebooks, into build/book/.

    python docs/build.py            # then open build/book/index.html

Nothing is executed: the pages show what the committed notebooks stored. The steps:
1. build/book-src/ gets the sources, laid out like the repository (so a page's launch links open
   the right file): index.md = the README's introduction and its chapter list; every
   notebooks/0*.ipynb, with its widget outputs (the explorer, tqdm's progress bars) replaced by a
   still picture and a sentence on how to run it live, the Colab setup cell left out (the page has
   its own launch links), the `# NBVAL_...` marker lines dropped, and a launch line (Colab, Binder)
   under its title; notebooks/figures/; the pages written for the book in docs/*.md.
2. Sphinx (myst-nb, sphinx-book-theme; settings in docs/conf.py) writes the HTML to build/book/.
3. MathJax's files (from the jupyter-server-mathjax package) go to build/book/_static/mathjax/, so
   the maths renders without a network.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import shutil
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SRC = ROOT / "build" / "book-src"
OUT = ROOT / "build" / "book"
sys.path.insert(0, str(DOCS))
import links  # noqa: E402

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
TQDM = re.compile(r"^(?P<desc>[^\n|]*?):?\s*\d+%\|.*?\|\s*\d+/(?P<total>\d+)", re.S)
SETUP_TAG = "colab-setup"
STILL_EXPLORER = ROOT / "notebooks" / "figures" / "explorer.png"


# ---------------------------------------------------------------------------------------------
# The front page


def readme_front_page(readme: str) -> str:
    """The README's introduction (up to its first `## ` section) and its chapter list, for index.md.

    The launch badges' images are replaced by copies in the book (the book must read offline).
    """
    sections = re.split(r"(?m)^(?=## )", readme)
    intro = sections[0]
    chapters = next((s for s in sections if s.startswith("## The chapters")), "")
    text = intro.rstrip() + "\n\n" + chapters.rstrip() + "\n"
    text = re.sub(r"<!--.*?-->\n?", "", text, flags=re.S)  # the README's markers
    text = repository_links(text, "")
    text = text.replace(links.BINDER_BADGE, "_static/badge-binder.svg").replace(
        links.COLAB_BADGE, "_static/badge-colab.svg"
    )
    return text


def toctree(docnames: list[str], caption: str) -> str:
    return "\n```{toctree}\n:hidden:\n:maxdepth: 2\n:caption: " + caption + "\n\n" + "\n".join(docnames) + "\n```\n"


# ---------------------------------------------------------------------------------------------
# The chapters


def png_data(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def progress_bar_png(description: str, total: int) -> str:
    """A still picture of a finished tqdm bar (base64 PNG), drawn with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 0.45), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.text(0.01, 0.5, f"{description}: 100%".strip(": "), va="center", fontsize=10)
    ax.add_patch(matplotlib.patches.Rectangle((0.25, 0.25), 0.45, 0.5, color="#5cb85c"))
    ax.text(0.72, 0.5, f"{total:,} of {total:,} steps", va="center", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def placeholder_png(text: str) -> str:
    """A still card for a widget the book has no picture of (base64 PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 0.8), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.add_patch(matplotlib.patches.Rectangle((0.005, 0.05), 0.99, 0.9, fill=False, ec="#999", lw=1.5))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#444")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def run_live_sentence(rel: str, what: str) -> str:
    return (
        f"*{what} Run the chapter to use it live: [open it in Colab]({links.colab_url(rel)}) (a GPU is "
        f"free there), [launch it on Binder]({links.binder_url(rel)}), or on your machine with "
        f"`jupyter lab {rel}`.*"
    )


def still_outputs(output: dict, rel: str) -> list[dict] | None:
    """The outputs that replace a widget output (or a text progress bar), or None to keep it."""
    data = output.get("data", {})
    plain = (
        "".join(data.get("text/plain", "")) if isinstance(data.get("text/plain"), list) else data.get("text/plain", "")
    )
    if output.get("output_type") == "stream":
        text = "".join(output.get("text", ""))
        if not TQDM.search(text.strip().split("\r")[-1]):
            return None
        plain = text.strip().split("\r")[-1]
    elif WIDGET_MIME not in data:
        return None
    bar = TQDM.search(plain)
    if plain.startswith("Explorer(") and STILL_EXPLORER.is_file():
        png = png_data(STILL_EXPLORER)
        sentence = run_live_sentence(rel, "A still picture of the explorer, the widget this cell shows.")
    elif bar:
        total = int(bar.group("total"))
        png = progress_bar_png(bar.group("desc").strip() or "progress", total)
        sentence = run_live_sentence(
            rel,
            f"Here a progress bar counts the {total:,} steps while the cell runs (a still picture of it when done).",
        )
    else:
        png = placeholder_png("an interactive widget: run the notebook to use it")
        sentence = run_live_sentence(rel, "Here the notebook shows an interactive widget.")
    return [
        {"output_type": "display_data", "metadata": {}, "data": {"image/png": png}},
        {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": sentence}},
    ]


MD_LINK = re.compile(r"(\]\()([^)\s#]+)((?:#[^)\s]*)?\))")


def repository_links(markdown: str, folder: str) -> str:
    """Links to files of the repository that are not pages of the book now open them on GitHub.

    `folder` is where the markdown lives in the repository ("" or "notebooks"); links to chapters,
    to pictures the book copies (notebooks/figures) and to the web are left as they are.
    """

    def rewrite(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return match.group(0)
        path = (ROOT / folder / target).resolve()
        try:
            rel = path.relative_to(ROOT).as_posix()
        except ValueError:
            return match.group(0)
        in_book = path in links.chapters() or rel.startswith("notebooks/figures/")
        if in_book or not path.exists():  # a missing file stays, and Sphinx reports the broken link
            return match.group(0)
        kind = "tree" if path.is_dir() else "blob"
        return f"{match.group(1)}{links.repository_url()}/{kind}/{links.BRANCH}/{rel}{match.group(3)}"

    return MD_LINK.sub(rewrite, markdown)


def launch_line(rel: str) -> str:
    return (
        '<div class="pe-launch">\n'
        f'<a href="{links.colab_url(rel)}"><img src="../_static/badge-colab.svg" alt="Open in Colab"></a>\n'
        f'<a href="{links.binder_url(rel)}"><img src="../_static/badge-binder.svg" alt="Launch on Binder"></a>\n'
        "<span>Run this chapter: Colab has a free GPU; Binder a CPU, nothing to install.</span>\n"
        "</div>\n"
    )


def book_notebook(nb: dict, rel: str) -> dict:
    """The chapter as the book shows it (a copy; the committed notebook is not touched)."""
    nb = copy.deepcopy(nb)
    cells = [c for c in nb["cells"] if SETUP_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in cells:
        if cell["cell_type"] == "markdown":
            cell["source"] = repository_links("".join(cell["source"]), str(Path(rel).parent))
        if cell["cell_type"] != "code":
            continue
        # the test runner's markers (`# NBVAL_CHECK_OUTPUT`) mean nothing to a reader
        cell["source"] = re.sub(r"\A(#\s*NBVAL_[A-Z_]+[^\n]*\n)+", "", "".join(cell["source"]))
        outputs = []
        for output in cell.get("outputs", []):
            outputs.extend(still_outputs(output, rel) or [output])
        cell["outputs"] = outputs
    # the launch line goes right under the chapter's title
    first = next((c for c in cells if c["cell_type"] == "markdown"), None)
    source = "".join(first["source"]) if first else ""
    title = re.match(r"# [^\n]*\n", source + "\n")
    if first is not None and title:
        first["source"] = source[: title.end()] + "\n" + launch_line(rel) + source[title.end() :]
    else:
        cells.insert(0, {"cell_type": "markdown", "metadata": {}, "source": launch_line(rel)})
    nb["cells"] = cells
    nb["metadata"].pop("widgets", None)
    return nb


# ---------------------------------------------------------------------------------------------


def prepare_sources() -> list[str]:
    """Fill build/book-src/; returns the chapters' docnames in order."""
    if SRC.exists():
        shutil.rmtree(SRC)
    (SRC / "notebooks").mkdir(parents=True)
    shutil.copytree(ROOT / "notebooks" / "figures", SRC / "notebooks" / "figures")
    shutil.copytree(DOCS / "_static", SRC / "_static")  # the badges the front page shows
    chapters = []
    for path in links.chapters():
        rel = path.relative_to(ROOT).as_posix()
        nb = book_notebook(json.loads(path.read_text(encoding="utf-8")), rel)
        (SRC / rel).write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
        chapters.append(Path(rel).with_suffix("").as_posix())
    if not chapters:
        raise SystemExit("no chapters found: expected notebooks/0*.ipynb")
    pages = []
    for page in sorted(DOCS.glob("*.md")):
        shutil.copy(page, SRC / page.name)
        pages.append(page.stem)
    front = readme_front_page((ROOT / "README.md").read_text(encoding="utf-8"))
    front += toctree(chapters, "Chapters") + (toctree(pages, "Appendix") if pages else "")
    (SRC / "index.md").write_text(front, encoding="utf-8")
    return chapters


def copy_mathjax() -> None:
    import jupyter_server_mathjax

    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = OUT / "_static" / "mathjax"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(static, target)


def build() -> float:
    from sphinx.cmd.build import build_main

    start = time.perf_counter()
    chapters = prepare_sources()
    if OUT.exists():
        shutil.rmtree(OUT)
    # -W: a broken reference or a missing image stops the build; -E: no stale pickled environment
    code = build_main(
        [
            "-b",
            "html",
            "-q",
            "-W",
            "--keep-going",
            "-E",
            "-c",
            str(DOCS),
            "-d",
            str(ROOT / "build" / "book-doctrees"),
            str(SRC),
            str(OUT),
        ]
    )
    if code:
        raise SystemExit(f"sphinx-build failed (exit code {code}); its messages are above")
    copy_mathjax()
    seconds = time.perf_counter() - start
    print(f"book: {OUT.relative_to(ROOT)}/index.html and {len(chapters)} chapters, built in {seconds:.1f} s")
    return seconds


if __name__ == "__main__":
    build()
