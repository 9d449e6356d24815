"""The client-side attention view (perceiver_edu/explorer/view.py and view.js).

Python side: the data the browser gets is the trace, shape for shape and value for value; the HTML is
self-contained (the package's script inlined, nothing fetched) with a still picture. Browser side
(marked `browser`, headless Chromium from file:// with the network cut): clicks, arrow keys and
hovering change what is drawn, the readout shows the stored weight, and with scripts stripped (as
GitHub's preview does) a picture remains.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import perceiver_edu as pe
from perceiver_edu.explorer import view as view_module
from perceiver_edu.explorer.view import AttentionView, Scene

ROOT = Path(__file__).resolve().parents[1]
N_SCENES = 3


@pytest.fixture(scope="module")
def model():
    return pe.pretrained("scenes")


@pytest.fixture(scope="module")
def held_out():
    return pe.held_out_scenes(N_SCENES)


@pytest.fixture(scope="module")
def view(model, held_out):
    return AttentionView.from_scenes(model, held_out)


def traces_of(model, held_out):
    with torch.no_grad():
        return [model.resampler(model.embed(held_out[k].images), return_trace=True)[1] for k in range(len(held_out))]


def decoded(state):
    meta = state["meta"]
    attn = np.frombuffer(base64.b64decode(state["attn"]), dtype="<f4")
    shape = (len(meta["scenes"]), meta["depth"], meta["heads"], meta["latents"], meta["n"])
    return meta, attn.reshape(shape)


def test_the_data_is_the_trace(view, model, held_out):
    meta, attn = decoded(view.state())
    c = model.config
    assert attn.shape == (N_SCENES, c.depth, c.n_heads, c.n_latents, 64 + c.n_latents)
    assert (meta["s"], meta["grid"], meta["cls"], meta["kv"]) == (64, 8, 0, True)
    for k, trace in enumerate(traces_of(model, held_out)):
        for layer in range(c.depth):
            assert np.array_equal(attn[k, layer], trace.attentions[layer][0].numpy())
    assert np.allclose(attn.sum(-1), 1, atol=1e-5)  # rows are softmax rows


def test_scenes_pictures_boxes_and_labels(view, held_out):
    meta = view.meta
    pixels = np.frombuffer(view.pixels, dtype=np.uint8)
    assert pixels.size == sum(sc["h"] * sc["w"] * sc["channels"] for sc in meta["scenes"]) == N_SCENES * 32 * 32
    first = pixels[: 32 * 32].reshape(32, 32)
    assert np.abs(first / 255 - held_out.images[0].numpy()).max() <= 0.5 / 255 + 1e-6
    for k, sc in enumerate(meta["scenes"]):
        assert sc["labels"] == held_out.labels[k].tolist()
        assert sc["boxes"] == held_out.boxes[k].float().tolist()
        assert sc["label"] == f"held-out scene {k}"
    lut = base64.b64decode(meta["cmap"])
    assert len(lut) == 256 * 3 and lut[:3] == bytes([68, 1, 84])  # viridis starts dark purple


def test_a_photo_is_shrunk_and_its_cls_token_counted():
    trace = pe.PerceiverResampler(pe.ResamplerConfig.tiny())(torch.randn(1, 257, 32), return_trace=True)[1]
    photo = pe.inputs.sample_image(16)  # [224, 224, 3]
    v = AttentionView([trace], [Scene("photo", photo)], grid=16, cls=1)
    sc = v.meta["scenes"][0]
    assert (sc["h"], sc["w"], sc["channels"]) == (128, 128, 3) and len(v.pixels) == 128 * 128 * 3
    assert (v.meta["grid"], v.meta["cls"], v.meta["s"]) == (16, 1, 257)
    with pytest.raises(ValueError, match="needs s = 256"):
        AttentionView([trace], [Scene("photo", photo)], grid=16, cls=0)


def test_mismatched_traces_are_refused(model, held_out):
    (trace,) = traces_of(model, held_out[:1])
    small = pe.ResamplerConfig(embed_dim=32, depth=1, n_heads=2, head_dim=8, n_latents=4)
    other = pe.PerceiverResampler(small)(torch.randn(1, 64, 32), return_trace=True)[1]
    with pytest.raises(ValueError, match="one Scene per trace"):
        AttentionView([trace], [])
    with pytest.raises(ValueError, match="same depth"):
        AttentionView([trace, other], [Scene("a"), Scene("b")])


def test_html_is_self_contained_with_a_still_picture(view):
    page = view.html()
    assert page.isascii()
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}" alt="[^"]+"', page)
    assert "const peView = {" in page and "export default" not in page  # the module, inlined as a script
    assert "function render({ model, el })" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing to fetch
    assert "import(" not in page and "<script src" not in page
    data = json.loads(re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', page, re.S).group(1))
    assert data["attn"] == view.state()["attn"] and data["layer"] == view.meta["depth"] - 1
    bundle = view._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png", "text/plain"}
    assert base64.b64decode(bundle["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_widget_sends_the_same_bytes(view):
    widget = view.widget()
    assert isinstance(widget, view_module.ViewWidget)
    assert widget.attn == base64.b64decode(view.state()["attn"]) and widget.pixels == view.pixels
    assert widget.meta == view.meta and (widget.layer, widget.tab) == (view.meta["depth"] - 1, "head")
    assert Path(widget._esm).read_text() == view_module.module_source() if isinstance(widget._esm, Path) else True
    widget.layer, widget.head = 1, 3
    smaller = AttentionView([view.traces[0]], [view.scenes[0]], start={"layer": 0})
    widget.show(smaller, keep_view=True)
    assert (widget.layer, widget.head, widget.scene) == (1, 3, 0)
    assert len(widget.attn) == 4 * smaller.attn.numel()


# -- in a browser, from file:// -------------------------------------------------------------------

sys.path.insert(0, str(ROOT / "tests"))


def open_page(browser, url):
    """A page at `url` that may fetch nothing but file:// URLs; console errors are collected."""
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    problems, requests = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    def route(r):
        requests.append(r.request.url)
        return r.continue_() if r.request.url.startswith("file:") else r.abort()

    page.route("**/*", route)
    page.goto(url)
    return page, problems, requests


def canvas_pixels(root):
    return root.locator("canvas").evaluate("c => c.toDataURL()")


def drawn(root):
    return int(root.get_attribute("data-pe-drawn"))


def check_live_view(page, root, value_of):
    """Clicks, keys and hovering redraw; the readout shows the stored weight. value_of(scene, layer, head, i, j)."""
    assert drawn(root) >= 1
    before, count = canvas_pixels(root), drawn(root)
    root.locator("button[data-pe-layer='0']").click()
    assert drawn(root) == count + 1 and canvas_pixels(root) != before
    before, count = canvas_pixels(root), drawn(root)
    root.locator("button[data-pe-head='1']").click()
    assert drawn(root) == count + 1 and canvas_pixels(root) != before
    before, count = canvas_pixels(root), drawn(root)
    root.focus()
    page.keyboard.press("ArrowDown")  # the next layer
    assert drawn(root) == count + 1 and canvas_pixels(root) != before
    assert root.locator("button[data-pe-layer='1']").get_attribute("aria-pressed") == "true"
    canvas = root.locator("canvas")
    box = canvas.bounding_box()
    scale = box["width"] / canvas.evaluate("c => c.width")  # the book's column may shrink the canvas

    def at(x, y):
        return {"x": x * scale, "y": y * scale}

    # hover two rows of the map: the picture beside it follows the hovered latent
    overlay = {"x": 940 - 250, "y": 30, "width": 240, "height": 240}
    crop = "(c, r) => c.getContext('2d').getImageData(r.x, r.y, r.width, r.height).data.join(',')"
    canvas.hover(position=at(100, 30 + 5))
    first = canvas.evaluate(crop, overlay)
    canvas.hover(position=at(100, 30 + 176 - 5))
    assert canvas.evaluate(crop, overlay) != first
    readout = root.locator("[data-pe-readout]").inner_text()
    found = re.search(
        r"layer (\d+), head (\d+), latent (\d+) \u2192 (?:context token (\d+)|latent (\d+)'s key).*weight (\d\.\d{3})",
        readout,
    )
    assert found, readout
    layer, head, i = (int(found.group(k)) for k in (1, 2, 3))
    j = int(found.group(4)) if found.group(4) else 64 + int(found.group(5))
    scene = int(root.locator("button[data-pe-scene][aria-pressed='true']").get_attribute("data-pe-scene") or 0)
    assert float(found.group(6)) == round(value_of(scene, layer, head, i, j), 3)
    assert box["width"] > 500
    # hovering a patch of the scene names the latents that read it most, with their weights
    canvas.hover(position=at(940 - 250 + 135, 30 + 135))  # the middle of patch (4, 4) of the 8 x 8 grid
    text = root.locator("[data-pe-readout]").inner_text()
    found = re.search(
        r"layer (\d+), head (\d+): context token 36 \(patch row 4, column 4\) is read most by latent (\d+) \((\d\.\d{3})\)",
        text,
    )
    assert found, text
    layer, head, reader = (int(found.group(k)) for k in (1, 2, 3))
    weights = [value_of(scene, layer, head, i, 36) for i in range(8)]
    assert reader == max(range(8), key=weights.__getitem__) and float(found.group(4)) == round(max(weights), 3)


@pytest.mark.browser
@pytest.mark.slow
def test_the_html_view_is_live_offline(view, model, held_out, tmp_path):
    from test_browser import CHROMIUM, CHROMIUM_ARGS, need

    need(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    path = tmp_path / "view.html"
    path.write_text(f"<!doctype html><meta charset='utf-8'><body>{view.html()}</body>")
    traces = traces_of(model, held_out)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page, problems, requests = open_page(browser, path.as_uri())
        root = page.locator("[data-pe-view='scenes']")
        root.locator("button[data-pe-scene='2']").click()
        check_live_view(page, root, lambda sc, L, h, i, j: float(traces[sc].attentions[L][0, h, i, j]))
        for tab in ("heads", "grid", "share", "entropy", "image"):  # every tab draws
            count = drawn(root)
            root.locator(f"button[data-pe-tab='{tab}']").click()
            assert drawn(root) > count
        assert not problems, problems
        assert all(u.startswith("file:") for u in requests), requests
        # as GitHub's preview shows it: scripts stripped, the still picture stays
        stripped = re.sub(r"<script.*?</script>", "", view.html(), flags=re.S)
        page.set_content(f"<body>{stripped}</body>")
        image = page.locator(".pe-view-host img")
        assert image.count() == 1 and image.evaluate("i => i.naturalWidth") > 300
        assert page.locator("[data-pe-view]").count() == 0
        browser.close()


# -- the book's chapters 2 and 3, from file://, no kernel, no network -----------------------------

# sphinx-book-theme's own script logs this on a page opened from file:// (no stored theme mode); it
# is not the view's, and the theme then uses its default
THEME_NOTICE = "Got invalid theme mode"


def chapter_views():
    """What the chapters' views hold: the scenes model on pe.held_out_scenes(8) (chapters 2 and 3)."""
    model = pe.pretrained("scenes")
    return traces_of(model, pe.held_out_scenes(8))


@pytest.fixture(scope="module")
def book_pages():
    """The book built with the README's command (test_book's fixture, once for this module)."""
    import importlib.util
    import subprocess

    import test_book
    from test_browser import need

    for module in ("sphinx", "myst_nb", "sphinx_book_theme"):
        need(importlib.util.find_spec(module) is not None, f'{module} is not installed (pip install -e ".[docs]")')
    run = subprocess.run(
        ["bash", "-c", f"set -e; {test_book.book_command()}"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return test_book.BOOK


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("chapter", ["02_attention_maps", "03_explorer"])
def test_the_books_chapter_views_are_live_offline(chapter, book_pages):
    from test_browser import CHROMIUM, CHROMIUM_ARGS, need

    need(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    traces = chapter_views()
    page_path = book_pages / "notebooks" / f"{chapter}.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page, problems, requests = open_page(browser, page_path.as_uri())
        root = page.locator("[data-pe-view='scenes']").first
        root.scroll_into_view_if_needed()
        assert root.locator("button[data-pe-scene]").count() == 8  # eight held-out scenes, all in the page
        root.locator("button[data-pe-scene='5']").click()
        check_live_view(page, root, lambda sc, L, h, i, j: float(traces[sc].attentions[L][0, h, i, j]))
        views = page.locator("[data-pe-view]")
        assert all(int(views.nth(k).get_attribute("data-pe-drawn")) >= 1 for k in range(views.count()))
        assert page.locator(".pe-view-host > img").count() == 0  # every still picture was replaced
        assert not [m for m in problems if THEME_NOTICE not in m], problems
        assert requests and all(u.startswith("file:") for u in requests), [
            u for u in requests if not u.startswith("file:")
        ]
        browser.close()


def test_the_chapters_run_the_packages_script():
    """A stored view inlines view.js as it was when the chapter ran: it must be today's file."""
    from perceiver_edu.explorer.view import module_source

    today = module_source().replace("export default {", "const peView = {").encode("ascii", "backslashreplace").decode()
    for chapter in ("02_attention_maps", "03_explorer"):
        nb = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
        pages = [
            "".join(o["data"]["text/html"])
            for c in nb["cells"]
            for o in c.get("outputs", [])
            if "text/html" in o.get("data", {}) and "pe-view-host" in "".join(o["data"]["text/html"])
        ]
        assert pages, f"{chapter} stores no live view"
        assert all(today in html for html in pages), f"{chapter}: re-run it, its views hold an older view.js"
        # GitHub's preview runs no scripts: each view's output also carries the still picture
        assert all(re.search(r'<img src="data:image/png;base64,[^"]{1000,}" alt="[^"]{10,}"', html) for html in pages)
        assert (ROOT / "notebooks" / f"{chapter}.ipynb").stat().st_size <= 4 * 2**20
