"""The static book, as a reader meets it: built by the README's book command, every page opened in Chromium.

The book is built once per run with the command between the README's book-command markers (it
renders the stored notebooks and never executes them). Without the `docs` extra, or without
/usr/bin/chromium, the tests skip with a message, unless PERCEIVER_EDU_REQUIRE_BROWSER=1 (set by
.ci/run), where they fail. The browser is Debian's chromium driven by Playwright (never a downloaded
browser), with no network beyond 127.0.0.1: the book must read offline. A full-page screenshot of
every page lands in build/book-screenshots/.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "build" / "book"
SHOTS = ROOT / "build" / "book-screenshots"
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "tests"))
from test_browser import CHROMIUM, CHROMIUM_ARGS, need  # noqa: E402  (one way to find and skip the browser)

sys.path.insert(0, str(ROOT / "docs"))
import links  # noqa: E402

pytestmark = [pytest.mark.slow]

# The text forms a widget output falls back to, which the book must never show
RAW_WIDGET = [
    re.compile(p)
    for p in (
        r"\b(H|V|Grid)?Box\(children=",
        r"\b(Tab|Accordion|Stack)\(children=",
        r"\b\w*(Slider|Progress|Dropdown|Checkbox|Text|Button|Output|Image)\((value|layout|outputs)=",
        r"\bExplorer\(depth",
        r"\d+%\|",
        r"\|\s*\d+/\d+ \[",
    )
]  # the last two: tqdm's "0%|    | 0/1000 [00:00<?"


def chapter_names() -> list[str]:
    return [p.stem for p in links.chapters()]


def book_command() -> str:
    block = re.search(r"<!-- book-command -->\s*```bash\n(.*?)```\s*<!-- /book-command -->", README.read_text(), re.S)
    assert block, "README.md has no ```bash block between <!-- book-command --> markers"
    return block.group(1).strip()


@pytest.fixture(scope="module")
def book() -> Path:
    """Build the book with the README's command (once per module); its HTML folder."""
    for module in ("sphinx", "myst_nb", "sphinx_book_theme", "jupyter_server_mathjax"):
        need(importlib.util.find_spec(module) is not None, f'{module} is not installed (pip install -e ".[docs]")')
    notebooks = {p: p.read_bytes() for p in links.chapters()}
    started = time.monotonic()
    run = subprocess.run(
        ["bash", "-c", f"set -e; {book_command()}"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"the book command failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    print(f"book built in {time.monotonic() - started:.1f} s")
    # rendered from the stored notebooks: none was executed or rewritten
    assert {p: p.read_bytes() for p in links.chapters()} == notebooks
    return BOOK


def page_html(book: Path, name: str) -> str:
    return (book / name).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# What the build wrote (no browser needed)


def test_front_page_is_the_readme_introduction(book):
    html = page_html(book, "index.html")
    intro = README.read_text().split("\n## ", 1)[0]
    tagline = re.search(r"^\*\*(.+?)\*\*$", intro, re.M).group(1)  # the bold line under the title
    assert tagline in html
    for image in re.findall(r"!\[[^\]]*\]\((notebooks/figures/[^)]+)\)", intro):
        assert Path(image).name in html, f"the README's picture {image} is not on the front page"
    for path in links.chapters():  # the sidebar lists every chapter, the README's Colab badges open it
        assert f'href="notebooks/{path.stem}.html"' in html
        assert f'href="{links.colab_url(path.relative_to(ROOT).as_posix())}"' in html
    assert "badge-colab.svg" in html and links.COLAB_BADGE not in html  # the book's own badge picture


def test_no_markdown_is_left_unrendered(book):
    """A stray backtick in the text is a code span that did not render (a `|` in a table cell, say)."""
    for path in sorted(book.rglob("*.html")):
        article = re.search(r'<article class="bd-article">(.*?)</article>', path.read_text(encoding="utf-8"), re.S)
        if not article:
            continue
        text = re.sub(r"<(pre|code|script|style)\b.*?</\1>", "", article.group(1), flags=re.S)
        stray = [text[max(0, m.start() - 60) : m.start() + 20] for m in re.finditer("`", text)]
        assert not stray, f"{path.relative_to(book)}: markdown left as text near {stray[0]!r}"


def test_links_to_repository_files_open_on_github():
    spec = importlib.util.spec_from_file_location("book_build", ROOT / "docs" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    text = "[a](../perceiver_edu/steps.py#L3) [b](02_attention_maps.ipynb) [c](figures/x.png) [d](https://x.org/y)"
    assert build.repository_links(text, "notebooks") == (
        f"[a]({links.repository_url()}/blob/{links.BRANCH}/perceiver_edu/steps.py#L3) "
        "[b](02_attention_maps.ipynb) [c](figures/x.png) [d](https://x.org/y)"
    )


def test_one_page_per_chapter_in_order_with_previous_and_next(book):
    names = chapter_names()
    assert names, "no notebooks/0*.ipynb"
    order = ["index"] + [f"notebooks/{n}" for n in names]
    for i, name in enumerate(names):
        html = page_html(book, f"notebooks/{name}.html")
        prev = re.search(r'<a class="left-prev"\s+href="([^"]+)"', html)
        assert prev, f"{name}: no link to the previous page"
        assert (book / "notebooks" / prev.group(1)).resolve() == (book / f"{order[i]}.html").resolve()
        if i + 1 < len(names):
            nxt = re.search(r'<a class="right-next"\s+href="([^"]+)"', html)
            assert nxt and nxt.group(1) == f"{names[i + 1]}.html", f"{name}: next page is not {names[i + 1]}"


def test_chapter_pages_have_highlighted_code_and_launch_links(book):
    for path in links.chapters():
        rel = path.relative_to(ROOT).as_posix()
        html = page_html(book, f"notebooks/{path.stem}.html")
        assert re.search(r'class="highlight-i?python3?\b', html) and re.search(
            r'<span class="(k|kn)">import</span>', html
        ), f"{path.stem}: no highlighted Python code"
        assert f'href="{links.colab_url(rel)}"' in html, f"{path.stem}: no Colab link to {rel}"
        assert f'href="{links.binder_url(rel)}"' in html.replace("&amp;", "&"), f"{path.stem}: no Binder link"
        assert "google.colab" not in html, f"{path.stem}: the Colab setup cell belongs in the notebook, not the book"
        assert "NBVAL_" not in html, f"{path.stem}: the test runner's markers are for nbval, not for readers"


def widget_texts(path: Path) -> list[str]:
    """The text/plain fallbacks of the widget outputs stored in a chapter (what GitHub shows)."""
    nb = json.loads(path.read_text())
    texts = []
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                plain = data.get("text/plain", "")
                texts.append(("".join(plain) if isinstance(plain, list) else plain).strip())
    return [t for t in texts if t]


def test_widget_outputs_are_still_pictures_never_text(book):
    import html as html_lib

    widget_outputs = 0
    for path in links.chapters():
        texts = widget_texts(path)
        widget_outputs += len(texts)
        page = html_lib.unescape(page_html(book, f"notebooks/{path.stem}.html"))
        for text in texts:
            assert text[:40] not in page, f"{path.stem}: the widget's text form {text[:40]!r} is on the page"
        outputs = " ".join(re.findall(r'<div class="cell_output.*?</div>\s*</div>', page, re.S))
        for pattern in RAW_WIDGET:
            assert not pattern.search(outputs), f"{path.stem}: a widget shows as text ({pattern.pattern})"
        n_stills = page.count("Run the chapter to use it live")
        assert n_stills == len(texts), f"{path.stem}: {len(texts)} widget outputs but {n_stills} still pictures"
    assert widget_outputs, "no chapter has a widget output: the check above proves nothing"
    explorer = page_html(book, "notebooks/03_explorer.html")
    assert "A still picture of the explorer" in explorer and "Run the chapter to use it live" in explorer


# ---------------------------------------------------------------------------------------------
# Every page in the browser


@contextlib.contextmanager
def serve_book(book: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(book)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def target_exists(book: Path, base: str, href: str, url: str) -> str | None:
    """None when the internal link `url` (absolute) opens a file of the book and its #anchor; else why not."""
    parts = urlsplit(url)
    rel = unquote(parts.path)[len(urlsplit(base).path) :]
    target = book / (rel or "index.html")
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"{href}: {rel} is not in the book"
    if parts.fragment and target.suffix == ".html":
        if not re.search(rf'\b(id|name)="{re.escape(unquote(parts.fragment))}"', target.read_text(encoding="utf-8")):
            return f"{href}: no #{parts.fragment} in {rel}"
    return None


@pytest.mark.browser
def test_every_page_in_chromium(book):
    need(Path(CHROMIUM).exists(), f"{CHROMIUM} not found (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright (the Python package) is not installed")
    pages = sorted(
        p.relative_to(book).as_posix()
        for p in book.rglob("*.html")
        if "_static" not in p.parts and "_sources" not in p.parts
    )
    expected = {"index.html", *(f"notebooks/{n}.html" for n in chapter_names())}
    assert expected <= set(pages), f"missing pages: {expected - set(pages)}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    problems, maths_pages, started = [], [], time.monotonic()
    with serve_book(book) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            failed = []
            page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
            page.on("response", lambda r: failed.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)
            for name in pages:
                failed.clear()
                page.goto(base + name, wait_until="load")
                # every image: loaded, and with pixels
                page.evaluate(
                    "Promise.all([...document.images].map(i => { i.loading = 'eager'; "
                    "return i.decode().catch(() => null); }))"
                )
                broken = page.evaluate(
                    "[...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                    ".map(i => i.getAttribute('src').slice(0, 80))"
                )
                problems += [f"{name}: image not loaded: {src}" for src in broken]
                # every figure of a chapter has alt text, for readers who use a screen reader (the
                # notebooks keep it in each figure cell's metadata, mystnb.image.alt)
                no_alt = page.evaluate(
                    "[...document.querySelectorAll('.cell_output img')]"
                    ".filter(i => !(i.getAttribute('alt') || '').trim())"
                    ".map(i => (i.getAttribute('src') || '').slice(0, 60))"
                )
                problems += [f"{name}: figure without alt text: {src}" for src in no_alt]
                # maths: MathJax typesets every formula of the page (wait for its queue to empty)
                n_math = page.evaluate("document.querySelectorAll('span.math, div.math').length")
                if n_math:
                    maths_pages.append(name)
                    try:
                        page.wait_for_function(
                            "() => window.MathJax && MathJax.Hub && MathJax.Hub.queue && "
                            "document.querySelectorAll('.MathJax, .MathJax_Display').length > 0",
                            timeout=30_000,
                        )
                        page.evaluate("new Promise(done => MathJax.Hub.Queue(done))")  # its queue has run
                    except PlaywrightTimeout:
                        pass  # reported below: nothing typeset
                    state = page.evaluate("""() => ({
                        rendered: document.querySelectorAll('script[type^="math/tex"]').length,
                        raw: [...document.querySelectorAll('span.math, div.math')]
                               .filter(e => /\\\\[(\\[]/.test(e.innerText)).length,
                        errors: document.querySelectorAll('.MathJax_Error, .merror, [data-mjx-error]').length})""")
                    if state["rendered"] < n_math or state["raw"] or state["errors"]:
                        problems.append(f"{name}: maths not rendered: {n_math} formulas, {state}")
                # no widget in its text form
                outputs = page.evaluate(
                    "[...document.querySelectorAll('.cell_output')].map(e => e.innerText).join('\\n')"
                )
                for pattern in RAW_WIDGET:
                    if pattern.search(outputs):
                        problems.append(f"{name}: raw widget text ({pattern.pattern})")
                if name.startswith("notebooks/") and Path(name).stem in chapter_names():
                    texts = widget_texts(ROOT / "notebooks" / (Path(name).stem + ".ipynb"))
                    problems += [f"{name}: widget as text: {t[:40]!r}" for t in texts if t[:40] in outputs]
                # every internal link
                for href, url in page.evaluate(
                    "[...document.querySelectorAll('a[href]')].map(a => [a.getAttribute('href'), a.href])"
                ):
                    if url.startswith(base):
                        why = target_exists(book, base, href, url)
                        if why:
                            problems.append(f"{name}: broken link {why}")
                # nothing failed to load: no missing file, and no request out of the book (it reads offline)
                # (MathJax 2 probes web-font loading with an about:blank font, which always "fails")
                problems += [
                    f"{name}: request failed: {f}"
                    for f in failed
                    if not f.startswith((base + "favicon.ico", "about:blank"))
                ]
                page.screenshot(
                    path=str(SHOTS / (name.replace("/", "__").removesuffix(".html") + ".png")), full_page=True
                )
        finally:
            browser.close()
    print(f"{len(pages)} pages checked in Chromium in {time.monotonic() - started:.1f} s; maths on {maths_pages}")
    assert not problems, "\n".join(problems)
    assert "notation.html" in maths_pages, "the formulas page showed no maths: the maths check proves nothing"
    assert len(list(SHOTS.glob("*.png"))) == len(pages)
