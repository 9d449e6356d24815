"""The explorer: change a Perceiver Resampler's architecture and watch where its latents look.

    explorer = pe.Explorer()          # the last expression of a cell shows the whole UI
    explorer.controls["depth"].value = 6
    explorer.set(depth=6, qk_norm=True)   # several controls at once, one forward pass

What it shows is the `attn = softmax(scores - max)` of every block in the diagram of DESIGN.md
([b, h, l, n], recorded by the Trace), and two numbers read off it: the context share and the entropy.

Two kinds of change, two costs. Architecture and input controls (n_heads, head_dim, depth,
n_latents, context_length, qk_norm, latents_in_kv, input_kind, seed, device) build a new model and
run it once, keeping the Trace. View controls (layer, head, latent, the tab) only redraw from that
stored Trace. Figures come from `viz.py`; each view draws into one Figure that it keeps and reuses,
and the PNG goes to an `ipywidgets.Image`. A setting that cannot run (an image context of the
wrong length, a model over the memory budget, a device that fails) shows a message and leaves the
last good view on screen: the explorer never shows a traceback.
Letters: b batch, s context length, l latents, h heads, d head dim, e embed dim, n keys (s + l).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import time
from dataclasses import dataclass, replace
from html import escape
from typing import Any, Iterator

import ipywidgets as w
import PIL.Image
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from . import viz
from .config import ResamplerConfig
from .device import available_devices, pick_device
from .inputs import INPUT_KINDS, grid_side, make_context, sample_image
from .modules import PerceiverResampler
from .trace import Trace

EMBED_DIM = 64  # e: fixed in the explorer; what changes the attention is h, d, l, s and depth
MEMORY_BUDGET_MB = 200  # a setting whose trace and activations need more is refused with a message
DPI = 80  # screen PNGs: sharp enough to read, small enough to redraw fast

# Every control, its default, and what changing it costs. The defaults are the config a learner
# meets first: IDEFICS' shape of input (257 tokens of a real photo), scaled down to redraw instantly.
DEFAULTS: dict[str, Any] = dict(
    n_heads=4, head_dim=16, depth=2, n_latents=8, context_length=257, qk_norm=False, latents_in_kv=True,
    input_kind="image", seed=0, layer=0, head=0, latent=0,
)
ARCHITECTURE = ("n_heads", "head_dim", "depth", "n_latents", "context_length", "qk_norm", "latents_in_kv",
                "input_kind", "seed", "device")
VIEW = ("layer", "head", "latent")

# The tabs: (key, title). Only the visible tab is drawn; the others catch up when they are opened.
VIEWS = (
    ("head", "chosen head"),
    ("heads", "heads of the layer"),
    ("share", "context vs latents"),
    ("entropy", "entropy"),
    ("image", "on the image"),
)


class Refused(ValueError):
    """A setting the explorer will not run (e.g. over the memory budget); the message says why."""


# -- the forward pass the explorer runs (also used by benchmarks/gpu_check.py) ----------------------

@dataclass(frozen=True)
class Run:
    """One forward pass of the explorer: what was run, what came out, and how long it took."""

    config: ResamplerConfig
    input_kind: str
    context_length: int
    seed: int
    device: str
    output: Tensor  # [b, l, e], on the CPU
    trace: Trace  # everything on the CPU, ready to plot
    seconds: float  # the forward pass alone (synchronised on a GPU)
    n_params: int


def estimate_bytes(config: ResamplerConfig, context_length: int, batch: int = 1) -> int:
    """Roughly how many bytes a traced forward pass and the explorer's summaries of it need (float32).

    The attention maps dominate: depth x [b, h, l, n] for the weights and again for the scores,
    kept in the Trace, plus a stacked copy of each for the context-share and entropy views.
    """
    c, s = config, context_length
    n = s + c.n_latents if c.latents_in_kv else s
    maps = c.depth * batch * c.n_heads * c.n_latents * n
    # per layer: kv_input [b, n, e], q/k/v [b, n, (h d)], softmax temporaries [b, h, l, n]
    per_layer = batch * (n * c.embed_dim + 3 * n * c.inner_dim + 3 * c.n_heads * c.n_latents * n)
    params = c.depth * (4 * c.embed_dim * c.inner_dim + 2 * c.embed_dim * c.mlp_dim) + c.n_latents * c.embed_dim
    return 4 * (4 * maps + per_layer + params)


@functools.lru_cache(maxsize=8)
def _context(kind: str, context_length: int, embed_dim: int, seed: int) -> Tensor:
    """make_context, remembered: an image context resizes a photo, too slow to redo on every click.

    The cached tensor is shared, so nobody may write into it; the model only reads its context.
    """
    return make_context(kind, batch=1, context_length=context_length, embed_dim=embed_dim, seed=seed)


@contextlib.contextmanager
def _few_threads(config: ResamplerConfig, context_length: int, device: str) -> Iterator[None]:
    """Run a small CPU forward pass on one thread.

    Splitting a few-kFLOP matmul across threads gains nothing, and on a busy machine (a laptop
    running a browser, a CI box) waiting for the other threads stalls a 1 ms forward pass for
    100 ms and more. Big settings keep all threads.
    """
    small = estimate_bytes(config, context_length) < 32 * 2**20
    if device != "cpu" or not small:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_forward(config: ResamplerConfig, *, input_kind: str = "image", context_length: int = 257, seed: int = 0,
                device: str = "cpu") -> Run:
    """Build the resampler with seeded weights, run it once on a seeded context, keep the trace.

    The weights are drawn on the CPU from `seed` whatever the device, so the same settings give the
    same model on a GPU and on the CPU and their results can be compared.
    Raises ValueError for a context the settings cannot make (an image needs s = g*g + 1).
    """
    # The context is drawn from seed + 1: make_context(seed=k) and torch.manual_seed(k) start the same
    # random stream, so with one seed the first l random context tokens would be the latents themselves
    # (and columns i and s + i of every map identical), a coincidence, not something to explain.
    context = _context(input_kind, context_length, config.embed_dim, seed + 1)  # [1, s, e]
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the learner's RNG
        torch.manual_seed(seed)
        model = PerceiverResampler(config)
    model = model.to(device).eval()
    context = context.to(device)
    synchronize = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    with torch.no_grad(), _few_threads(config, context_length, str(device)):
        synchronize()
        start = time.perf_counter()
        output, trace = model(context, return_trace=True)
        synchronize()
        seconds = time.perf_counter() - start
    # plotting works on CPU numbers; moving the trace once here keeps every redraw off the device
    trace = replace(
        trace,
        attentions=tuple(a.cpu() for a in trace.attentions),
        scores=tuple(x.cpu() for x in trace.scores),
        latents=tuple(x.cpu() for x in trace.latents),
    )
    n_params = sum(p.numel() for p in model.parameters())
    return Run(config, input_kind, context_length, seed, str(device), output.cpu(), trace, seconds, n_params)


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, drawn once at its own dpi, lightly compressed.

    `savefig` lays a constrained figure out in an extra pass before drawing it; drawing the Agg
    canvas directly runs the layout once, inside the draw. Encoding is part of every redraw, so
    the PNG gets the fastest compression level.
    """
    canvas = _agg_canvas(fig)
    canvas.draw()
    return _canvas_png(canvas)


def _agg_canvas(fig: Figure) -> FigureCanvasAgg:
    return fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)


def _canvas_png(canvas: FigureCanvasAgg) -> bytes:
    rgba = canvas.buffer_rgba()  # [H, W, 4] view of the canvas
    buffer = io.BytesIO()
    PIL.Image.frombuffer("RGBA", (rgba.shape[1], rgba.shape[0]), rgba, "raw", "RGBA", 0, 1).convert("RGB").save(
        buffer, format="png", compress_level=1)
    return buffer.getvalue()


# -- the widget -----------------------------------------------------------------------------------

def _controls(devices: list[str], device: str) -> dict[str, w.Widget]:
    """The controls, by the names in DESIGN.md. Sliders fire when released, not on every pixel of a drag."""
    style = {"description_width": "100px"}
    box = w.Layout(width="300px")

    def slider(description, lo, hi, step=1, tooltip=""):
        return w.IntSlider(min=lo, max=hi, step=step, description=description, continuous_update=False,
                           style=style, layout=box, tooltip=tooltip)

    return {
        "n_heads": slider("heads h", 1, 16, tooltip="attention heads per block"),
        "head_dim": slider("head dim d", 4, 128, 4, tooltip="width of each head"),
        "depth": slider("depth", 1, 12, tooltip="number of blocks (attention + MLP)"),
        "n_latents": slider("latents l", 1, 128, tooltip="how many tokens the context is compressed to"),
        "context_length": slider("context s", 1, 1025,
                                 tooltip="context tokens; image input needs g*g + 1, e.g. 65, 145, 257"),
        "qk_norm": w.Checkbox(description="QK-norm", indent=False, tooltip="LayerNorm over d on q and k"),
        "latents_in_kv": w.Checkbox(description="latents in keys/values", indent=False,
                                    tooltip="the Flamingo detail: latents also attend to themselves"),
        "input_kind": w.Dropdown(options=list(INPUT_KINDS), description="input", style=style, layout=box),
        "seed": w.BoundedIntText(min=0, max=2**31 - 1, description="seed", continuous_update=False, style=style,
                                 layout=box, tooltip="seeds the weights and the context"),
        "device": w.Dropdown(options=devices, value=device, description="device", style=style, layout=box),
        "layer": slider("layer", 0, 1),
        "head": slider("head", 0, 3),
        "latent": slider("latent (image)", 0, 7, tooltip="which latent's row the image view shows"),
    }


class Explorer:
    """The ipywidgets explorer. Display it (last expression of a cell) to see the whole UI.

    controls    dict name -> widget: n_heads, head_dim, depth, n_latents, context_length, qk_norm,
                latents_in_kv, input_kind, seed, device, layer, head (and latent, for the image view)
    run         the last successful Run (its .trace is what the views show)
    message     why the last setting was refused ("" when it ran)
    n_runs      forward passes so far; n_renders: figures drawn so far (both only grow)
    views       dict view -> ipywidgets.Image holding the PNG; figures: the Figure each view reuses
    """

    def __init__(self, *, embed_dim: int = EMBED_DIM, memory_budget_mb: float = MEMORY_BUDGET_MB,
                 **settings: Any) -> None:
        unknown = sorted(set(settings) - set(DEFAULTS) - {"device"})
        if unknown:
            raise TypeError(f"Explorer got unknown setting(s) {unknown}; settings are {sorted(ARCHITECTURE + VIEW)}")
        self.embed_dim = embed_dim
        self.memory_budget = int(memory_budget_mb * 2**20)
        self.run: Run | None = None
        self.message = ""
        self.n_runs = 0
        self.n_renders = 0
        self._holding = False
        self._shown: dict[str, Any] = {}  # view -> the key of what its PNG shows, to skip needless redraws
        self._map_shape: Any = None  # ([l, n], s) of the map viz last drew into figures["head"]
        self._map_blitter: _MapBlitter | None = None

        devices = available_devices()
        device = pick_device()
        if device not in devices:  # e.g. "cuda:1" forced through PERCEIVER_EDU_DEVICE
            devices = [device] + devices
        if "device" in settings and settings["device"] not in devices:
            raise ValueError(f"device must be one of the devices available here, {devices}; "
                             f"got {settings['device']!r}")
        self.controls = _controls(devices, device)

        self.figures = {
            "head": Figure(figsize=(8, 3.2), dpi=DPI, layout="constrained"),
            "heads": Figure(figsize=(10, 3.2), dpi=DPI, layout="constrained"),
            "share": Figure(figsize=(10, 4.2), dpi=DPI, layout="constrained"),
            "entropy": Figure(figsize=(10, 4.2), dpi=DPI, layout="constrained"),
            "image": Figure(figsize=(5.6, 5.6), dpi=DPI, layout="constrained"),
        }
        self.views = {key: w.Image(format="png", layout=w.Layout(max_width="100%")) for key, _ in VIEWS}
        for key, image in self.views.items():
            image.add_class(f"pe-view-{key}")  # a handle for the browser test
        for name, control in self.controls.items():
            control.add_class(f"pe-control-{name}")
        self.tabs = w.Tab(children=[self.views[key] for key, _ in VIEWS], titles=[title for _, title in VIEWS])
        self.status = w.HTML(layout=w.Layout(margin="4px 0"))
        self.status.add_class("pe-status")
        self.problem = w.HTML(layout=w.Layout(margin="4px 0"))
        self.problem.add_class("pe-message")
        self.ui = self._layout()

        for name in ARCHITECTURE:
            self.controls[name].observe(self._guarded(self._rebuild), names="value")
        for name in VIEW:
            self.controls[name].observe(self._guarded(self._redraw), names="value")
        self.tabs.observe(self._guarded(self._redraw), names="selected_index")
        self.set(**{**DEFAULTS, **settings})  # the first run; a setting that cannot run says why

    # -- layout -----------------------------------------------------------------------------------
    def _layout(self) -> w.VBox:
        c = self.controls
        def column(title, names):
            return w.VBox([w.HTML(f"<b>{title}</b>")] + [c[n] for n in names],
                          layout=w.Layout(width="320px", margin="0 16px 0 0"))

        header = w.HTML("<b>Perceiver Resampler explorer</b>: change the architecture or the input and the "
                        "model is rebuilt and run once; change layer, head or tab and the stored trace is redrawn.")
        controls = w.HBox([
            column("architecture", ["n_heads", "head_dim", "depth", "n_latents", "qk_norm", "latents_in_kv"]),
            column("input and device", ["input_kind", "context_length", "seed", "device"]),
            column("what to show", ["layer", "head", "latent"]),
        ])
        ui = w.VBox([header, controls, self.status, self.problem, self.tabs])
        ui.add_class("pe-explorer")
        return ui

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        """Displaying the explorer displays its UI; plain text (GitHub, a terminal) gets one readable line."""
        bundle = self.ui._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = f"Explorer({self.describe()}); run the notebook to use the controls"
        return bundle

    # -- driving it from Python ---------------------------------------------------------------------
    @property
    def trace(self) -> Trace | None:
        return None if self.run is None else self.run.trace

    def set(self, **values: Any) -> "Explorer":
        """Set several controls at once: one rebuild (if any architecture control changed), one redraw."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise TypeError(f"Explorer has no control(s) {unknown}; controls are {sorted(self.controls)}")
        architecture = {k: v for k, v in values.items() if k in ARCHITECTURE}
        for name, value in architecture.items():
            self._check_value(name, value)
        with self._hold():
            for name, value in architecture.items():
                self.controls[name].value = value
        if architecture:  # first the new model, so that e.g. layer=5 fits the new depth
            self._guarded(lambda: self._rebuild(draw=False))()
        view = {k: v for k, v in values.items() if k not in architecture}
        for name, value in view.items():
            self._check_value(name, value)
        with self._hold():
            for name, value in view.items():
                self.controls[name].value = value
        self._guarded(self._redraw)()
        return self

    def _check_value(self, name: str, value: Any) -> None:
        """A value the control cannot take gets a message (a slider would silently clamp it)."""
        control = self.controls[name]
        if isinstance(control, w.Dropdown):
            if value not in control.options:
                raise ValueError(f"{name} must be one of {list(control.options)}; got {value!r}")
        elif isinstance(control, w.Checkbox):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False; got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int; got {value!r} ({type(value).__name__})")
        elif not control.min <= value <= control.max:
            why = {"layer": "the model's depth", "head": "its number of heads",
                   "latent": "its number of latents"}.get(name, "the explorer's range")
            raise ValueError(f"{name} must be between {control.min} and {control.max} ({why}); got {value}")

    def show(self, view: str) -> "Explorer":
        """Bring a view to the front: 'head', 'heads', 'share', 'entropy' or 'image'."""
        keys = [key for key, _ in VIEWS]
        if view not in keys:
            raise ValueError(f"view must be one of {keys}; got {view!r}")
        self.tabs.selected_index = keys.index(view)
        return self

    @property
    def visible(self) -> str:
        return VIEWS[self.tabs.selected_index or 0][0]

    def figure(self, view: str | None = None) -> Figure:
        """The Figure a view shows (drawn now if it is out of date): for a static copy in a notebook."""
        view = view or self.visible
        if view not in self.figures:
            raise ValueError(f"view must be one of {list(self.figures)}; got {view!r}")
        self._render(view)
        return self.figures[view]

    # -- what happens on a change -----------------------------------------------------------------
    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        """Set controls without their observers firing (e.g. clamping `layer` when depth shrinks)."""
        before, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = before

    def _guarded(self, action):
        """Wrap an observer: skip it while holding, and turn any failure into a message, never a traceback."""

        def observer(change: Any = None) -> None:
            if self._holding:
                return
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - a widget must never die; the message says what happened
                self._refuse(f"{type(exc).__name__}: {exc}")

        return observer

    def _settings(self) -> dict[str, Any]:
        return {name: self.controls[name].value for name in ARCHITECTURE}

    def _rebuild(self, draw: bool = True) -> None:
        """Architecture or input changed: check, build, run once, then redraw the visible view."""
        s = self._settings()
        try:
            config = ResamplerConfig(embed_dim=self.embed_dim, depth=s["depth"], n_heads=s["n_heads"],
                                     head_dim=s["head_dim"], n_latents=s["n_latents"], qk_norm=s["qk_norm"],
                                     latents_in_kv=s["latents_in_kv"])
            need = estimate_bytes(config, s["context_length"])
            if need > self.memory_budget:
                raise Refused(
                    f"this setting needs about {need / 2**20:.0f} MB for its attention maps and activations, "
                    f"over the explorer's budget of {self.memory_budget / 2**20:.0f} MB "
                    f"(Explorer(memory_budget_mb=...)); make depth, heads, latents or the context smaller"
                )
            if s["input_kind"] == "image":
                grid_side(s["context_length"])  # the learner's message about g*g + 1, before any work
            run = run_forward(config, input_kind=s["input_kind"], context_length=s["context_length"],
                              seed=s["seed"], device=s["device"])
        except (ValueError, TypeError) as exc:  # a setting that cannot be: the message names the argument
            self._refuse(str(exc))
            return
        except RuntimeError as exc:  # the device failed (out of memory, a driver error)
            self._refuse(f"the forward pass failed on {s['device']}: {exc}")
            if str(s["device"]).startswith("cuda"):
                torch.cuda.empty_cache()
            return
        self.run = run
        self.n_runs += 1
        self.message = ""
        self.problem.value = ""
        with self._hold():  # the view controls follow the new shape; clamping them must not redraw twice
            for name, top in (("layer", config.depth - 1), ("head", config.n_heads - 1),
                              ("latent", config.n_latents - 1)):
                self.controls[name].max = top
        self.status.value = self._status_html(run)
        if draw:
            self._redraw()

    def _redraw(self) -> None:
        """Layer, head, latent or tab changed (or a new run): draw the visible view from the stored trace."""
        if self.run is not None:
            self._render(self.visible)

    def _refuse(self, message: str) -> None:
        """Say why, keep the last good view."""
        self.message = message
        kept = f" Still showing: {escape(self.describe())}." if self.run is not None else ""
        self.problem.value = (f"<div style='color:#a40000'><b>Cannot show this setting.</b> {escape(message)}"
                              f"{kept}</div>")

    # -- drawing ------------------------------------------------------------------------------------
    def _view_key(self, view: str) -> tuple:
        c = {name: self.controls[name].value for name in VIEW}
        depends = {"head": ("layer", "head"), "heads": ("layer",), "share": (), "entropy": (),
                   "image": ("layer", "head", "latent")}[view]
        return (self.n_runs,) + tuple(c[name] for name in depends)

    def _render(self, view: str) -> None:
        """Draw one view into its Figure and put the PNG on screen, unless it already shows this."""
        run = self.run
        if run is None:
            return
        key = self._view_key(view)
        if self._shown.get(view) == key:
            return
        fig = self.figures[view]
        trace = run.trace
        layer = min(self.controls["layer"].value, trace.depth - 1)
        head = min(self.controls["head"].value, run.config.n_heads - 1)
        s = trace.context_length
        if view == "head":
            attn = trace.attentions[layer][0, head]  # [l, n]
            title = f"layer {layer}, head {head}: {attn.shape[0]} latents over {attn.shape[1]} keys (s = {s})"
            shape = (tuple(attn.shape), s)
            if shape == self._map_shape and _update_map_in_place(fig, attn, title):
                png = self._map_blitter.png()  # same axes, new numbers: draw only what moved
            else:
                self._map_shape = self._map_blitter = None  # in case viz fails half-way through
                fig.set_layout_engine("constrained")
                viz.plot_attention_map(attn, s, title=title, fig=fig)
                png = figure_png(fig)
                # the constrained layout has placed the axes; a map of the same shape with other
                # numbers fits the same places, and laying out every label again is most of a redraw
                fig.set_layout_engine("none")
                self._map_shape, self._map_blitter = shape, _MapBlitter(fig)
        elif view == "heads":
            h = run.config.n_heads
            rows = math.ceil(h / min(h, 4))
            fig.set_size_inches(10, 1.9 * rows + 1.3)  # the grid grows with the number of heads
            viz.plot_heads(trace.attentions[layer][0], s, layer=layer, fig=fig)
        elif view == "share":
            viz.plot_context_share(trace, fig=fig)
        elif view == "entropy":
            viz.plot_entropy(trace, fig=fig)
        elif view == "image":
            if run.input_kind != "image":
                _message_figure(fig, "Choose input 'image' to see the attention on the photo's patches.")
            else:
                latent = min(self.controls["latent"].value, run.config.n_latents - 1)
                row = trace.attentions[layer][0, head, latent]  # [n]
                viz.plot_attention_on_image(row, sample_image(grid_side(s)), context_length=s, fig=fig,
                                            title=f"layer {layer}, head {head}, latent {latent} on the photo")
        self.views[view].value = png if view == "head" else figure_png(fig)
        self.n_renders += 1
        self._shown[view] = key

    # -- text -------------------------------------------------------------------------------------
    def describe(self, run: Run | None = None) -> str:
        """One line: what the views show now (or what `run` was)."""
        run = run or self.run
        if run is None:
            return "nothing run yet"
        c = run.config
        return (f"depth {c.depth}, {c.n_heads} heads of {c.head_dim}, {c.n_latents} latents, "
                f"{run.input_kind} input of {run.context_length} tokens, qk_norm={c.qk_norm}, "
                f"latents_in_kv={c.latents_in_kv}, seed {run.seed}, {run.device}")

    @staticmethod
    def _status_html(run: Run) -> str:
        shape = list(run.output.shape)
        t = run.trace
        return (f"<span style='font-family:monospace'>output [b, l, e] = {shape} · {run.n_params:,} parameters · "
                f"device {escape(run.device)} · forward {run.seconds * 1e3:.1f} ms · attention [b, h, l, n] = "
                f"{list(t.attentions[0].shape)} per layer</span>")


def _update_map_in_place(fig: Figure, attn: Tensor, title: str) -> bool:
    """Swap the numbers of a map viz already drew, when only the head or the layer changed.

    Building the axes again (ticks, labels, colour bar) is most of a redraw's time; a map of the
    same shape can keep all of them. Uses viz's own colour-scale rule, so the result is the figure
    `viz.plot_attention_map` would draw. The caller checks the shape; returns False when the
    figure does not hold one map after all.
    """
    ax = fig.axes[0] if fig.axes else None
    if ax is None or len(ax.images) != 1:
        return False
    values = attn.detach().float().numpy()
    image = ax.images[0]
    image.set_data(values)
    image.set_clim(0.0, viz._vmax(values))  # the colour bar follows its mappable
    ax.set_title(title, pad=14)
    return True


class _MapBlitter:
    """Redraw one attention map quickly when only its numbers change (another head, layer or seed).

    Everything that stays (axes, ticks, axis labels) is drawn once and its pixels are kept; each
    update pastes them back and draws on top only what changes: the image, the divider and its
    labels, the frame, the title and the colour bar (whose ticks follow the new colour scale).
    This is matplotlib's blitting, used for animation, here to answer a slider in a few ms.
    """

    def __init__(self, fig: Figure) -> None:
        self.fig = fig
        self.background = None
        ax = fig.axes[0]
        on_map = [*ax.images, *ax.lines, *ax.texts, *ax.spines.values(), ax.title]
        self.moving = sorted(on_map, key=lambda a: a.get_zorder()) + fig.axes[1:]  # then the colour bar

    def png(self) -> bytes:
        canvas = _agg_canvas(self.fig)
        if self.background is None:
            # animated artists are left out of a normal draw: what remains is the background
            for artist in self.moving:
                artist.set_animated(True)
            try:
                canvas.draw()
            finally:
                for artist in self.moving:  # a later savefig or notebook display draws everything again
                    artist.set_animated(False)
            self.background = canvas.copy_from_bbox(self.fig.bbox)
        else:
            canvas.restore_region(self.background)
        renderer = canvas.get_renderer()
        for artist in self.moving:
            artist.draw(renderer)
        return _canvas_png(canvas)


def _message_figure(fig: Figure, text: str) -> None:
    fig.clear()
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title("attention on the image")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
