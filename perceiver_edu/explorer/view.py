"""The client-side attention view: the tensors go to the browser once, the browser draws every change.

    view = pe.AttentionView.from_scenes(pe.pretrained("scenes"), pe.held_out_scenes(8))
    view            # the last expression of a cell: the live view (in the book and nbviewer too)
    view.widget()   # the same view as an anywidget, for a kernel that sends new tensors (the explorer)

The drawing is one small ES module, `view.js`, next to this file. `AttentionView` packs a Trace (or
several, one per scene) into what that module reads: `meta` (shapes, the scenes' boxes and labels,
the viridis colour map), `attn` (float32 [scenes, depth, h, l, n]) and `pixels` (each scene's image
as uint8). Displayed, it is self-contained HTML: the module inlined from the package (nothing from a
CDN), the data embedded as base64, and a still picture (one matplotlib PNG) that the script replaces
with the live canvas. Where scripts do not run (GitHub's notebook preview) the picture stays.
Letters: b batch, s context length, l latents, h heads, d head dim, e embed dim, n keys (s + l).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..trace import Trace

JS = Path(__file__).with_name("view.js")
TABS = ("head", "heads", "grid", "share", "entropy", "image")
MAX_SIDE = 128  # a picture larger than this is shrunk for the page: the patches stay readable


def module_source() -> str:
    """view.js, read from the package (the one place the JavaScript lives)."""
    return JS.read_text(encoding="utf-8")


def viridis_lut() -> bytes:
    """The viridis colour map as 256 RGB triples: the view's one colour scale, as matplotlib draws it."""
    from matplotlib import colormaps

    rgb = colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]
    return (rgb * 255).round().astype(np.uint8).tobytes()


def _image_bytes(image: Any) -> tuple[bytes, int, int, int]:
    """An image ([H, W] grey or [H, W, 3] RGB, floats in [0, 1]) as uint8 bytes, at most MAX_SIDE wide."""
    array = np.asarray(image.detach().cpu() if isinstance(image, Tensor) else image, dtype=np.float32)
    array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    if max(array.shape[:2]) > MAX_SIDE:
        import PIL.Image

        side = MAX_SIDE
        array = np.asarray(PIL.Image.fromarray(array).resize((side, side), PIL.Image.Resampling.BILINEAR))
    h, w = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    return array.tobytes(), h, w, channels


@dataclass
class Scene:
    """One input the view can switch to: its label, its picture (or None) and its digits' boxes and classes."""

    label: str
    image: Any = None  # [H, W] or [H, W, 3] in [0, 1], or None: context tokens that are not patches
    boxes: list = field(default_factory=list)  # [[y0, x0, y1, x1]] in the image's pixels
    labels: list = field(default_factory=list)
    short: str = ""  # the scene button's text


class AttentionView:
    """Traces of one model on several scenes, as the browser view draws them.

    attn    float32 [scenes, depth, h, l, n]: every attention weight of every trace (batch row 0)
    meta    the shapes (depth, heads, latents, s, n), the grid of patches and whether token 0 is a
            CLS token, the scenes' labels, boxes and classes, the colour map
    start   which scene, layer, head, latent and tab the view opens on
    """

    def __init__(
        self,
        traces: list[Trace],
        scenes: list[Scene],
        *,
        name: str = "attention",
        grid: int = 0,
        cls: int = 0,
        start: dict[str, Any] | None = None,
        alt: str = "",
    ) -> None:
        if not traces or len(traces) != len(scenes):
            raise ValueError(f"need one Scene per trace; got {len(traces)} traces and {len(scenes)} scenes")
        first = traces[0]
        shapes = {tuple(a.shape[1:]) for t in traces for a in t.attentions}
        if len(shapes) != 1 or len({t.depth for t in traces}) != 1:
            raise ValueError(f"every trace must have the same depth and [h, l, n]; got shapes {sorted(shapes)}")
        s = first.context_length
        if grid and grid * grid + cls != s:
            raise ValueError(
                f"a grid of {grid} x {grid} patches plus {cls} CLS token(s) needs s = {grid * grid + cls}; got {s}"
            )
        # [scenes, depth, h, l, n], batch row 0 of each trace
        self.attn = torch.stack([torch.stack([a[0] for a in t.attentions]) for t in traces]).float().contiguous()
        self.traces = traces
        self.scenes = scenes
        self.name = name
        self.alt = alt
        depth, h, l, n = self.attn.shape[1:]
        self.start = {"scene": 0, "layer": depth - 1, "head": 0, "latent": 0, "tab": "head", **(start or {})}
        pixels, described = [], []
        for scene in scenes:
            if scene.image is not None:
                data, ih, iw, channels = _image_bytes(scene.image)
                factor = iw / np.asarray(scene.image).shape[1]
            else:
                data, ih, iw, channels, factor = b"", 0, 0, 1, 1.0
            pixels.append(data)
            boxes = [
                [float(v) * factor for v in box]
                for box in (np.asarray(scene.boxes).tolist() if len(scene.boxes) else [])
            ]
            described.append(
                dict(
                    label=scene.label,
                    short=scene.short or scene.label,
                    h=ih,
                    w=iw,
                    channels=channels,
                    boxes=boxes,
                    labels=[int(x) for x in scene.labels],
                )
            )
        self.pixels = b"".join(pixels)
        self.meta = dict(
            name=name, depth=depth, heads=h, latents=l, s=s, n=n, kv=bool(first.latents_in_kv),
            grid=grid if all(sc.image is not None for sc in scenes) else 0, cls=cls, scenes=described,
            cmap=base64.b64encode(viridis_lut()).decode("ascii"),
        )  # fmt: skip

    # -- building it from the package's models -------------------------------------------------------
    @classmethod
    def from_scenes(cls, model: torch.nn.Module, scenes: Any, *, name: str = "scenes", indices: Any = None,
                    **kwargs: Any) -> AttentionView:  # fmt: skip
        """A trained (or untrained) SceneModel on held-out scenes, one trace per scene.

        scenes: a Scenes of k scenes (pe.held_out_scenes(k)); images [k, H, W], boxes and labels per scene.
        """
        indices = list(range(len(scenes))) if indices is None else list(indices)
        traces, described = [], []
        model = model.eval()
        with torch.no_grad():
            for k in indices:
                one = scenes[k]
                _, trace = model.resampler(model.embed(one.images), return_trace=True)
                traces.append(trace)
                described.append(
                    Scene(f"held-out scene {k}", one.images[0], one.boxes[0].tolist(), one.labels[0].tolist(), str(k))
                )
        grid = scenes.images.shape[-1] // model.patch_size
        return cls(traces, described, name=name, grid=grid, **kwargs)

    @classmethod
    def from_run(cls, run: Any, **kwargs: Any) -> AttentionView:
        """One run of the explorer (forward.Run): a held-out scene, the photo, or tokens with no picture."""
        from ..inputs import grid_side, sample_image
        from .forward import SCENE, scene_side

        s = run.context_length
        if run.input_kind == SCENE:
            one = run.scene
            scene = Scene(
                f"held-out scene {run.scene_index}", one.images[0], one.boxes[0].tolist(), one.labels[0].tolist()
            )
            grid, cls_tokens = scene_side(s), 0
        elif run.input_kind == "image":
            grid, cls_tokens = grid_side(s), 1
            scene = Scene("the photo", sample_image(grid))
        else:
            scene, grid, cls_tokens = Scene(f"{run.input_kind} input"), 0, 0
        weights = "random" if run.weights == "random" else run.weights
        return cls([run.trace], [scene], name=kwargs.pop("name", weights), grid=grid, cls=cls_tokens, **kwargs)

    # -- what the browser gets -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """meta, attn and pixels (base64 text) and the starting view: what view.js's model.get returns."""
        return {
            "meta": self.meta,
            "attn": base64.b64encode(self.attn.numpy().astype("<f4").tobytes()).decode("ascii"),
            "pixels": base64.b64encode(self.pixels).decode("ascii"),
            **self.start,
        }

    def still_png(self) -> bytes:
        """The picture shown where scripts cannot run: the starting head's map, drawn once with matplotlib."""
        from .. import viz

        st = self.start
        trace = self.traces[st["scene"]]
        fig = viz.plot_attention_map(
            trace.attentions[st["layer"]][0, st["head"]],
            trace.context_length,
            title=f"{self.scenes[st['scene']].label}: layer {st['layer']}, head {st['head']} "
            f"(a still picture; the live view needs scripts)",
        )
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=viz.DPI)
        return buffer.getvalue()

    def html(self, still: bytes | None = None) -> str:
        """Self-contained HTML: the still picture, the data, and the script that swaps in the live view."""
        uid = "pe-view-" + uuid.uuid4().hex[:12]
        still = self.still_png() if still is None else still
        alt = self.alt or f"attention map of the {self.name} model (a still picture of the interactive view)"
        data = json.dumps(self.state(), separators=(",", ":")).replace("</", "<\\/")
        # the module's `export default` becomes a local name: a classic script, run in place, no import
        # ASCII only (\uXXXX escapes in the strings), so the page reads the same in any charset
        source = module_source().replace("export default {", "const peView = {")
        source = source.encode("ascii", "backslashreplace").decode("ascii")
        img = base64.b64encode(still).decode("ascii")
        return (
            f'<div id="{uid}" class="pe-view-host">'
            f'<img src="data:image/png;base64,{img}" alt="{html.escape(alt)}" style="max-width:100%"></div>\n'
            f'<script type="application/json" id="{uid}-data">{data}</script>\n'
            "<script>(function () {\n"
            f"{source}\n"
            f'const host = document.getElementById("{uid}");\n'
            f'const values = JSON.parse(document.getElementById("{uid}-data").textContent);\n'
            "// a stand-in for anywidget's model: the embedded data, and the view's own choices\n"
            "const model = { get: (k) => values[k], set: (k, v) => { values[k] = v; }, on: () => {}, save_changes: () => {} };\n"
            "peView.render({ model, el: host });\n"
            "})();</script>\n"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """text/html (live where scripts run), image/png (the still picture) and one line of text."""
        still = self.still_png()
        return {
            "text/html": self.html(still),
            "image/png": base64.b64encode(still).decode("ascii"),
            "text/plain": f"AttentionView({self.name!r}: {self.describe()}); a still picture without scripts",
        }

    def describe(self) -> str:
        depth, h, l, n = self.attn.shape[1:]
        return f"{len(self.scenes)} scene(s), depth {depth}, {h} heads, {l} latents, n = {n} keys"

    def widget(self) -> Any:
        """The same view as an anywidget (a kernel can send it new tensors with `ViewWidget.show`)."""
        view = _widget_class()()
        view.show(self)
        return view


@functools.cache
def _widget_class() -> type:
    import anywidget
    import traitlets as t

    class ViewWidget(anywidget.AnyWidget):
        """The view as an anywidget: view.js draws, the tensors go as binary buffers.

        meta, attn (float32 bytes [scenes, depth, h, l, n]), pixels: what view.js reads; scene,
        layer, head, latent, tab: what it shows, kept in step both ways (a click in the browser
        sets them here, setting them here redraws there). `show(view)` sends a new AttentionView.
        """

        _esm = JS
        meta = t.Dict().tag(sync=True)
        attn = t.Bytes(b"").tag(sync=True)
        pixels = t.Bytes(b"").tag(sync=True)
        scene = t.Int(0).tag(sync=True)
        layer = t.Int(0).tag(sync=True)
        head = t.Int(0).tag(sync=True)
        latent = t.Int(0).tag(sync=True)
        tab = t.Unicode("head").tag(sync=True)

        def show(self, view: AttentionView, keep_view: bool = False) -> None:
            """Send `view`'s tensors in one message; keep_view keeps layer, head, latent and tab (clamped)."""
            with self.hold_sync():
                self.meta = view.meta
                self.pixels = view.pixels
                depth, h, l = view.attn.shape[1:4]
                if keep_view:
                    self.layer, self.head, self.latent = (
                        min(self.layer, depth - 1),
                        min(self.head, h - 1),
                        min(self.latent, l - 1),
                    )
                    self.scene = min(self.scene, len(view.scenes) - 1)
                else:
                    for key, value in view.start.items():
                        setattr(self, key, value)
                self.attn = view.attn.numpy().astype("<f4").tobytes()  # last: view.js reloads on it

    return ViewWidget


def __getattr__(name: str) -> Any:
    if name == "ViewWidget":  # anywidget is imported only when the widget is asked for
        return _widget_class()
    raise AttributeError(name)
