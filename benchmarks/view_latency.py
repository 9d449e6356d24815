"""The client-side view against the PNG path, in JupyterLab in headless Chromium, in the same run.

    python benchmarks/view_latency.py [--rounds 15]

Starts JupyterLab on 127.0.0.1 with a scratch notebook of three outputs: the live explorer
(`pe.Explorer()`, view.js draws), the PNG explorer (`pe.Explorer(live=False)`, a matplotlib PNG
per change: the explorer as it was before the view) and the 8-scene view of chapter 3
(`pe.AttentionView`, no kernel needed). Then, in the page, for each kind of change it times from
the input event to the drawn result:

- live: from the click (or key) to the view's `data-pe-drawn` going up by one;
- PNG: from the click (a tab, a checkbox) or from the kernel request that sets a slider's value
  (what the slider's comm message does) to the new PNG's `src` on the page, decoded.

View changes: layer, head, latent, tab, embedded scene (the PNG explorer has no embedded scenes: its
scene is an input, run again in the kernel, and is timed as such). Architecture changes: QK-norm on
and off at the default size (the trained default, which swaps trained variants; and random weights
on the photo, s = 257) and at IDEFICS' size (16 heads of 96, depth 6, 64 latents, s = 257, random
weights, embed dim 64). Prints medians, 95th percentiles and the ratio live / PNG.
Targets (issue 20): view change <= 16 / 33 ms; architecture change <= 40 / 100 ms at the default
size and <= 250 / 500 ms at IDEFICS' size (median / p95).

Status: unfinished. In its first runs on the project's 2-core machine it stalled before the first
figure: the page never showed the 8-scene view's canvas (its HTML output's script did not run in
that JupyterLab session, which reported the scratch notebook as not trusted), and a kernel request
sent from the page was answered with an IPython error. Both need fixing before its figures can go
in the README; tests/test_browser.py prints one live figure meanwhile (slider release -> view redrawn).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_browser import CHROMIUM, CHROMIUM_ARGS, free_port, serve  # noqa: E402  (one way to start both)

CELLS = [
    "import perceiver_edu as pe\nlive = pe.Explorer()\nlive",
    "png = pe.Explorer(live=False)\npng",
    'view = pe.AttentionView.from_scenes(pe.pretrained("scenes"), pe.held_out_scenes(8))\nview',
]
IDEFICS = dict(weights="random", n_heads=16, head_dim=96, depth=6, n_latents=64, input_kind="image", context_length=257)
PHOTO = dict(weights="random", input_kind="image", context_length=257)
TARGETS = {"view": (16, 33), "default": (40, 100), "idefics": (250, 500)}

# In the page: time an action until an attribute of `el` changes (and, for a PNG, is decoded).
TIMER = """
window.peTime = (el, attr, act) => new Promise((resolve) => {
  const t0 = performance.now();
  const done = new MutationObserver(async () => {
    done.disconnect();
    if (el.tagName === 'IMG') { try { await el.decode(); } catch (e) {} }
    resolve(performance.now() - t0);
  });
  done.observe(el, { attributes: true, attributeFilter: [attr] });
  setTimeout(() => { done.disconnect(); resolve(NaN); }, 60000);  // never hang: a lost change is NaN
  act();
});
window.peKernel = () => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
window.peRun = (code) => window.peKernel().requestExecute({ code, store_history: false }).done;
"""


def notebook(path: Path) -> None:
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src} for src in CELLS
    ]
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    path.write_text(json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(t for t in times if t == t)  # NaN: a change that never drew (reported apart)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="changes timed per kind (each way)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="pe-view-latency-"))
    notebook(work / "latency.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
    ] + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])  # fmt: skip
    # as the browser test does: no news or update checks, and every cell stays in the DOM
    settings = work / "settings" / "@jupyterlab"
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
        "PYTHONPATH": str(ROOT),
    }
    results: dict[str, dict[str, list[float]]] = {}

    def record(kind: str, path: str, value: float) -> None:
        results.setdefault(kind, {}).setdefault(path, []).append(value)

    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    with serve(command, work, env, url, work / "lab.log"), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(240_000)
        page.goto(f"http://127.0.0.1:{port}/lab/tree/latency.ipynb?token={token}")
        page.wait_for_function("""() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
                && w.sessionContext.session.kernel.status === 'idle'; }""")
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_selector("[data-pe-view='scenes']", state="attached")
        page.wait_for_selector(".pe-explorer >> nth=1", state="attached")
        page.wait_for_selector("[data-pe-view='explorer']", state="attached")
        page.evaluate(TIMER)
        live, png = page.locator(".pe-explorer").nth(0), page.locator(".pe-explorer").nth(1)
        view, scenes = live.locator("[data-pe-view='explorer']"), page.locator("[data-pe-view='scenes']")
        head_png = png.locator("img.pe-view-head")
        started = time.monotonic()

        def click_drawn(root, selector: str) -> float:  # a click in a live view until it has drawn
            button = root.locator(selector)
            button.scroll_into_view_if_needed()
            return page.evaluate(
                "([root, b]) => peTime(root, 'data-pe-drawn', () => b.click())",
                [root.element_handle(), button.element_handle()],
            )

        def kernel_png(image, code: str) -> float:  # a control set in the kernel until the new PNG shows
            return page.evaluate(
                "([img, code]) => peTime(img, 'src', () => peRun(code))", [image.element_handle(), code]
            )

        def click_png(image, target) -> float:
            return page.evaluate(
                "([img, t]) => peTime(img, 'src', () => t.click())", [image.element_handle(), target.element_handle()]
            )

        def check_live(qk: bool) -> float:
            box = live.locator(".pe-control-qk_norm input[type=checkbox]")
            return page.evaluate(
                "([root, b]) => peTime(root, 'data-pe-drawn', () => b.click())",
                [view.element_handle(), box.element_handle()],
            )

        def check_png(image) -> float:
            return click_png(image, png.locator(".pe-control-qk_norm input[type=checkbox]"))

        # -- view changes -------------------------------------------------------------------
        for r in range(args.rounds):
            for kind, values in (("layer", (0, 1)), ("head", (1, 2, 3, 0)), ("latent", (3, 0))):
                for v in values:
                    record(kind, "live", click_drawn(view, f"button[data-pe-{kind}='{v}']"))
                    record(kind, "png", kernel_png(head_png, f"png.controls[{kind!r}].value = {v}"))
            for tab, title in (("entropy", "entropy"), ("head", "chosen head")):
                record("tab", "live", click_drawn(view, f"button[data-pe-tab='{tab}']"))
                target = png.get_by_role("tab", name=title)
                record("tab", "png", click_png(png.locator(f"img.pe-view-{tab}"), target))
            for sc in (1 + r % 7, 0):
                record("scene", "live", click_drawn(scenes, f"button[data-pe-scene='{sc}']"))
                record("scene", "png", kernel_png(head_png, f"png.controls['scene'].value = {sc}"))

        # -- architecture changes: QK-norm off and on, at three sizes ---------------------------
        def arch(kind: str, settings: dict | None) -> None:
            if settings:
                page.evaluate("(code) => peRun(code)", f"live.set(**{settings!r}); png.set(**{settings!r})")
                page.wait_for_function("() => peKernel().status === 'idle'")
                page.wait_for_timeout(500)
            for _ in range(args.rounds):
                for _ in range(2):  # on, then off
                    record(kind, "live", check_live(True))
                    record(kind, "png", check_png(head_png))

        arch("architecture, trained default", None)
        arch("architecture, random on the photo", PHOTO)
        arch("architecture, IDEFICS' size", IDEFICS)
        browser.close()

    print(
        f"view_latency: {args.rounds} rounds per kind, JupyterLab + headless Chromium, {time.monotonic() - started:.0f} s"
    )
    print(f"{'change':38s} {'live median / p95 (ms)':>24s} {'PNG median / p95 (ms)':>24s} {'live / PNG':>11s}  target")
    for kind, paths in results.items():
        lm, lp = summary(paths["live"])
        pm, pp = summary(paths["png"])
        group = (
            "view"
            if kind in ("layer", "head", "latent", "tab", "scene")
            else "idefics"
            if "IDEFICS" in kind
            else "default"
        )
        tm, tp = TARGETS[group]
        met = "met" if lm <= tm and lp <= tp else "NOT met"
        print(f"{kind:38s} {lm:11.1f} / {lp:9.1f} {pm:13.1f} / {pp:9.1f} {lm / pm:11.2f}  <= {tm} / {tp}: {met}")


if __name__ == "__main__":
    main()
