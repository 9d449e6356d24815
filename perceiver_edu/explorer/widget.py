"""The explorer's widget: its controls, its layout, and what each change of a control costs.

Two kinds of change, two costs. Architecture and input controls (n_heads, head_dim, depth,
n_latents, context_length, qk_norm, latents_in_kv, input_kind, seed, device) build a new model and
run it once (forward.py), keeping the Trace. View controls (layer, head, latent, the tab) only
redraw from that stored Trace. What each tab shows is an entry of views.VIEWS; each view draws
into Figures that it keeps and reuses, one per layout it has seen (render.Painter), and the PNG goes to an
`ipywidgets.Image`. A setting that cannot run (an image context of the wrong length, a model over
the memory budget, a device that fails) shows a message and leaves the last good view on screen:
the explorer never shows a traceback.
Letters: b batch, s context length, l latents, h heads, d head dim, e embed dim, n keys (s + l).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from html import escape
from typing import Any

import ipywidgets as w
import torch
from matplotlib.figure import Figure

from ..config import ResamplerConfig
from ..device import available_devices, pick_device
from ..inputs import grid_side
from ..trace import Trace
from . import forward
from . import views as registry
from .forward import EMBED_DIM, INPUTS, MEMORY_BUDGET_MB, N_SCENES, RANDOM, SCENE, Run
from .render import Painter
from .view import TABS as LIVE_TABS
from .view import AttentionView
from .views import Pick

# Every control, its default, and what changing it costs. The defaults are the config a learner
# meets first: IDEFICS' shape of input (257 tokens of a real photo), scaled down to redraw instantly.
# The first view is the trained scenes model on a held-out scene, so that it means something; its
# architecture controls follow the trained model. With random weights the explorer starts from
# IDEFICS' shape of input instead (257 tokens of a real photo), scaled down to redraw instantly.
DEFAULTS: dict[str, Any] = dict(weights="scenes", scene=0, seed=0, layer=0, head=0, latent=0)  # layer: see __init__
RANDOM_DEFAULTS: dict[str, Any] = dict(
    n_heads=4,
    head_dim=16,
    depth=2,
    n_latents=8,
    context_length=257,
    qk_norm=False,
    latents_in_kv=True,
    input_kind="image",
)
ARCHITECTURE = (
    "weights",
    "n_heads",
    "head_dim",
    "depth",
    "n_latents",
    "context_length",
    "qk_norm",
    "latents_in_kv",
    "input_kind",
    "scene",
    "seed",
    "device",
)
VIEW = ("layer", "head", "latent")
# the context length each input falls back to when the current one does not fit it
FALLBACK_LENGTH = {"image": 257, SCENE: 64}


# -- the widget -----------------------------------------------------------------------------------


def _controls(devices: list[str], device: str, weights: tuple[str, ...]) -> dict[str, w.Widget]:
    """The controls, by the names in docs/design.md. Sliders fire when released, not on every pixel of a drag."""
    style = {"description_width": "100px"}
    box = w.Layout(width="300px")

    def slider(description, lo, hi, step=1, tooltip=""):
        return w.IntSlider(
            min=lo,
            max=hi,
            step=step,
            description=description,
            continuous_update=False,
            style=style,
            layout=box,
            tooltip=tooltip,
        )

    return {
        "weights": w.Dropdown(
            options=list(weights),
            description="weights",
            style=style,
            layout=box,
            tooltip="random (seeded), or a model trained on scenes of digits (pe.pretrained)",
        ),
        "n_heads": slider("heads h", 1, 16, tooltip="attention heads per block"),
        "head_dim": slider("head dim d", 4, 128, 4, tooltip="width of each head"),
        "depth": slider("depth", 1, 12, tooltip="number of blocks (attention + MLP)"),
        "n_latents": slider("latents l", 1, 128, tooltip="how many tokens the context is compressed to"),
        "context_length": slider(
            "context s", 1, 1025, tooltip="context tokens; image input needs g*g + 1, e.g. 65, 145, 257"
        ),
        "qk_norm": w.Checkbox(description="QK-norm", indent=False, tooltip="LayerNorm over d on q and k"),
        "latents_in_kv": w.Checkbox(
            description="latents in keys/values",
            indent=False,
            tooltip="the Flamingo detail: latents also attend to themselves",
        ),
        "input_kind": w.Dropdown(options=list(INPUTS), description="input", style=style, layout=box),
        "scene": w.BoundedIntText(
            min=0,
            max=N_SCENES - 1,
            description="scene",
            style=style,
            layout=w.Layout(width="190px"),
            tooltip=f"which held-out scene, pe.held_out_scenes({N_SCENES})[i]: never trained on",
        ),
        "seed": w.BoundedIntText(
            min=0,
            max=2**31 - 1,
            description="seed",
            continuous_update=False,
            style=style,
            layout=box,
            tooltip="seeds the random weights and the random, structured or image context",
        ),
        "device": w.Dropdown(options=devices, value=device, description="device", style=style, layout=box),
        "layer": slider("layer", 0, 1),
        "head": slider("head", 0, 3),
        "latent": slider(
            "latent (image)", 0, 7, tooltip="which latent the image view shows (on a scene: from which 8)"
        ),
    }


class _Figures(Mapping):
    """view -> the Figure that view shows now (a painter may keep one figure per layout, render.Painter)."""

    def __init__(self, painters: dict[str, Painter]) -> None:
        self._painters = painters

    def __getitem__(self, key: str) -> Figure:
        return self._painters[key].figure

    def __iter__(self) -> Iterator[str]:
        return iter(self._painters)

    def __len__(self) -> int:
        return len(self._painters)


class Explorer:
    """The ipywidgets explorer. Display it (last expression of a cell) to see the whole UI.

    controls    dict name -> widget: weights, n_heads, head_dim, depth, n_latents, context_length, qk_norm,
                latents_in_kv, input_kind, scene, seed, device, layer, head (and latent, for the image view)
    run         the last successful Run (its .trace is what the views show)
    message     why the last setting was refused ("" when it ran)
    note        what the explorer changed by itself on the last change (e.g. switched to random weights)
    n_runs      forward passes so far; n_renders: figures drawn so far (both only grow)
    views       dict view -> ipywidgets.Image holding the PNG; figures: view -> the Figure it shows now
    tab_views   the entries of views.VIEWS this explorer shows, in tab order
    """

    def __init__(
        self,
        *,
        embed_dim: int = EMBED_DIM,
        memory_budget_mb: float = MEMORY_BUDGET_MB,
        live: bool = True,
        **settings: Any,
    ) -> None:
        unknown = sorted(set(settings) - set(ARCHITECTURE) - set(VIEW))
        if unknown:
            raise TypeError(f"Explorer got unknown setting(s) {unknown}; settings are {sorted(ARCHITECTURE + VIEW)}")
        self.embed_dim = embed_dim
        # live: the browser draws (view.js); an architecture change sends the new tensors once and
        # every view change stays in the browser. live=False: the PNG path, a figure per change
        self.live_view = live
        self.memory_budget = int(memory_budget_mb * 2**20)
        self.run: Run | None = None
        self.message = ""
        self.note = ""
        self.n_runs = 0
        self.n_renders = 0
        self._holding = False
        self._shown: dict[str, Any] = {}  # view -> the key of what its PNG shows, to skip needless redraws

        devices = available_devices()
        device = pick_device()
        if device not in devices:  # e.g. "cuda:1" forced through PERCEIVER_EDU_DEVICE
            devices = [device] + devices
        if "device" in settings and settings["device"] not in devices:
            raise ValueError(f"device must be one of the devices available here, {devices}; got {settings['device']!r}")
        self.controls = _controls(devices, device, forward.weight_names())
        self.next_scene = w.Button(
            description="next scene", layout=w.Layout(width="110px"), tooltip="step to the next held-out scene"
        )
        self.next_scene.add_class("pe-next-scene")
        self.next_scene.on_click(lambda _: self._step_scene())

        self.tab_views = registry.VIEWS  # the registry as it was when this explorer was made
        self._painters = {view.key: Painter(view) for view in self.tab_views}
        self.figures = _Figures(self._painters)
        self.views = {view.key: w.Image(format="png", layout=w.Layout(max_width="100%")) for view in self.tab_views}
        for key, image in self.views.items():
            image.add_class(f"pe-view-{key}")  # a handle for the browser test
        for name, control in self.controls.items():
            control.add_class(f"pe-control-{name}")
        self.tabs = w.Tab(
            children=[self.views[view.key] for view in self.tab_views], titles=[view.title for view in self.tab_views]
        )
        self.status = w.HTML(layout=w.Layout(margin="4px 0"))
        self.status.add_class("pe-status")
        self.problem = w.HTML(layout=w.Layout(margin="4px 0"))
        self.problem.add_class("pe-message")
        self.live = None
        if live:
            from .view import ViewWidget

            self.live = ViewWidget(layout=w.Layout(max_width="100%"))
            self.live.add_class("pe-live")
            # a click in the browser (layer, head, latent) moves the matching slider, without a redraw here
            self.live.observe(self._from_browser, names=["layer", "head", "latent"])
        self.ui = self._layout()

        for name in ARCHITECTURE:
            self.controls[name].observe(self._guarded(lambda name=name: self._changed({name})), names="value")
        for name in VIEW:
            self.controls[name].observe(self._guarded(self._redraw), names="value")
        self.tabs.observe(self._guarded(self._redraw), names="selected_index")
        first = {**DEFAULTS, **settings}
        if first["weights"] not in self.controls["weights"].options:  # the trained files are missing
            first["weights"] = RANDOM
        if first["weights"] == RANDOM:
            first = {**RANDOM_DEFAULTS, **first}
        elif "layer" not in settings:  # a trained model opens on its last layer, where the latents find objects
            first["layer"] = forward.trained_model(first["weights"]).resampler.config.depth - 1
        self.set(**first)  # the first run; a setting that cannot run says why

    # -- layout -----------------------------------------------------------------------------------
    def _layout(self) -> w.VBox:
        c = self.controls

        def column(title, names):
            return w.VBox(
                [w.HTML(f"<b>{title}</b>")] + [c[n] for n in names], layout=w.Layout(width="320px", margin="0 16px 0 0")
            )

        header = w.HTML(
            "<b>Perceiver Resampler explorer</b>: change the weights, the architecture or the input and "
            "the model is built (or loaded) and run once; change layer, head, latent or tab and the view "
            "redraws from the stored attention (in the browser, with no round trip)."
        )
        controls = w.HBox(
            [
                column(
                    "weights and architecture",
                    ["weights", "n_heads", "head_dim", "depth", "n_latents", "qk_norm", "latents_in_kv"],
                ),
                column("input and device", ["input_kind", "context_length", "seed", "device"]),
                column("what to show", ["layer", "head", "latent"]),
            ]
        )
        # the scene stepper sits under the input: a number to type and a button for the next one
        controls.children[1].children += (w.HBox([c["scene"], self.next_scene]),)
        ui = w.VBox([header, controls, self.status, self.problem, self.live if self.live is not None else self.tabs])
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

    def set(self, **values: Any) -> Explorer:
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
            self._guarded(lambda: self._changed(set(architecture), draw=False))()
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
            why = {"layer": "the model's depth", "head": "its number of heads", "latent": "its number of latents"}.get(
                name, "the explorer's range"
            )
            raise ValueError(f"{name} must be between {control.min} and {control.max} ({why}); got {value}")

    def show(self, view: str) -> Explorer:
        """Bring a view to the front: 'head', 'heads', 'share', 'entropy' or 'image'."""
        keys = [view.key for view in self.tab_views]
        if view not in keys:
            raise ValueError(f"view must be one of {keys}; got {view!r}")
        self.tabs.selected_index = keys.index(view)
        if self.live is not None and view in LIVE_TABS:
            self.live.tab = view
        return self

    @property
    def visible(self) -> str:
        return self.tab_views[self.tabs.selected_index or 0].key

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

    def _step_scene(self) -> None:
        scene = self.controls["scene"]
        scene.value = (scene.value + 1) % N_SCENES

    def _changed(self, changed: set[str], draw: bool = True) -> None:
        """Controls in `changed` were set: keep the weights and the other controls consistent, then run."""
        c = self.controls
        if changed <= {"scene"} and c["input_kind"].value != SCENE:
            return  # the scene is the input only with input "scene"; nothing to run again
        with self._hold():
            self.note = self._couple(changed)
        self._rebuild(draw)

    def _couple(self, changed: set[str]) -> str:
        """Make the controls fit each other after `changed` were set; say what was changed by hand.

        Trained weights decide the architecture: choosing them sets the architecture controls
        (those not set in the same call) to the trained model's. QK-norm and latents-in-kv then
        step between the trained variants; any other architecture or input change, which has no
        trained weights, switches to random weights, and the returned note says so.
        """
        c = self.controls
        weights = c["weights"].value
        if "input_kind" in changed and "context_length" not in changed:
            kind, length = c["input_kind"].value, c["context_length"].value
            if kind in FALLBACK_LENGTH and not _fits(kind, length):
                c["context_length"].value = FALLBACK_LENGTH[kind]
        if weights == RANDOM:
            return ""
        if "weights" in changed:  # chosen: the controls follow the trained model
            trained = forward.trained_model(weights).resampler.config
            for name in ("n_heads", "head_dim", "depth", "n_latents", "qk_norm", "latents_in_kv"):
                if name not in changed:
                    c[name].value = getattr(trained, name)
            if "input_kind" not in changed:
                c["input_kind"].value = SCENE
            if "context_length" not in changed and not _fits(SCENE, c["context_length"].value):
                c["context_length"].value = FALLBACK_LENGTH[SCENE]
        if c["input_kind"].value != SCENE:
            c["weights"].value = RANDOM
            return (
                f"the trained models read scenes, not input {c['input_kind'].value!r}: "
                f"switched to random weights (seed {c['seed'].value})"
            )
        from ..pretrained import scenes_variant  # here: the trained examples load only when used

        variant = scenes_variant(c["qk_norm"].value, c["latents_in_kv"].value)
        differ = forward.differences(self._config(), forward.trained_model(variant).resampler.config)
        if differ:
            c["weights"].value = RANDOM
            return f"no trained weights for {', '.join(differ)}: switched to random weights (seed {c['seed'].value})"
        if variant != weights:
            c["weights"].value = variant
            return (
                f"QK-norm {c['qk_norm'].value}, latents in kv {c['latents_in_kv'].value}: trained variant {variant!r}"
            )
        return ""

    def _config(self) -> ResamplerConfig:
        s = self._settings()
        return ResamplerConfig(
            embed_dim=self.embed_dim,
            depth=s["depth"],
            n_heads=s["n_heads"],
            head_dim=s["head_dim"],
            n_latents=s["n_latents"],
            qk_norm=s["qk_norm"],
            latents_in_kv=s["latents_in_kv"],
        )

    def _rebuild(self, draw: bool = True) -> None:
        """Architecture or input changed: check, build, run once, then redraw the visible view."""
        s = self._settings()
        try:
            config = self._config()
            forward.check_budget(config, s["context_length"], self.memory_budget)
            if s["input_kind"] == "image":
                grid_side(s["context_length"])  # the learner's message about g*g + 1, before any work
            run = forward.run_forward(
                config,
                input_kind=s["input_kind"],
                context_length=s["context_length"],
                seed=s["seed"],
                device=s["device"],
                weights=s["weights"],
                scene=s["scene"],
            )
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
            for name, top in (
                ("layer", config.depth - 1),
                ("head", config.n_heads - 1),
                ("latent", config.n_latents - 1),
            ):
                self.controls[name].max = top
        self.status.value = self._status_html(run, self.note)
        if self.live is not None:  # the new tensors, once; the browser draws every view of them
            self.live.show(AttentionView.from_run(run, name="explorer"), keep_view=True)
        if draw:
            self._redraw()

    def _redraw(self) -> None:
        """Layer, head, latent or tab changed (or a new run): draw the visible view from the stored trace.

        Live, the browser draws: only the chosen layer, head and latent go to it (a few bytes).
        """
        if self.run is None:
            return
        if self.live is None:
            self._render(self.visible)
            return
        pick = self._pick(self.run)
        with self.live.hold_sync():
            self.live.layer, self.live.head, self.live.latent = pick.layer, pick.head, pick.latent

    def _from_browser(self, change: Any) -> None:
        """The live view chose a layer, head or latent: the slider follows (its observer then finds nothing to do)."""
        control = self.controls[change["name"]]
        if control.value != change["new"] and control.min <= change["new"] <= control.max:
            control.value = change["new"]

    def _refuse(self, message: str) -> None:
        """Say why, keep the last good view."""
        self.message = message
        kept = f" Still showing: {escape(self.describe())}." if self.run is not None else ""
        self.problem.value = (
            f"<div style='color:#a40000'><b>Cannot show this setting.</b> {escape(message)}{kept}</div>"
        )

    # -- drawing ------------------------------------------------------------------------------------
    def _pick(self, run: Run) -> Pick:
        c = self.controls
        return Pick.clamped(run, c["layer"].value, c["head"].value, c["latent"].value)

    def _render(self, key: str) -> None:
        """Draw one view into its Figure and put the PNG on screen, unless it already shows this."""
        run = self.run
        if run is None:
            return
        painter = self._painters[key]
        pick = self._pick(run)
        shown = (self.n_runs,) + tuple(getattr(pick, name) for name in painter.view.depends)
        if self._shown.get(key) == shown:
            return
        self.views[key].value = painter.paint(run, pick)
        self.n_renders += 1
        self._shown[key] = shown

    # -- text -------------------------------------------------------------------------------------
    def describe(self, run: Run | None = None) -> str:
        """One line: what the views show now (or what `run` was)."""
        run = run or self.run
        if run is None:
            return "nothing run yet"
        c = run.config
        what = f"held-out scene {run.scene_index}" if run.input_kind == SCENE else f"{run.input_kind} input"
        return (
            f"depth {c.depth}, {c.n_heads} heads of {c.head_dim}, {c.n_latents} latents, "
            f"{what} of {run.context_length} tokens, qk_norm={c.qk_norm}, "
            f"latents_in_kv={c.latents_in_kv}, {_weights_text(run)}, {run.device}"
        )

    @staticmethod
    def _status_html(run: Run, note: str = "") -> str:
        shape = list(run.output.shape)
        t = run.trace
        said = f"<br><b style='color:#8a5a00'>{escape(note, quote=False)}</b>" if note else ""
        return (
            f"<span style='font-family:monospace'>{escape(_weights_text(run), quote=False)} · "
            f"output [b, l, e] = {shape} · {run.n_params:,} parameters · device {escape(run.device)} · "
            f"forward {run.seconds * 1e3:.1f} ms · "
            f"attention [b, h, l, n] = {list(t.attentions[0].shape)} per layer</span>{said}"
        )


def _weights_text(run: Run) -> str:
    return f"random weights, seed {run.seed}" if run.weights == RANDOM else f"trained weights {run.weights!r}"


def _fits(kind: str, context_length: int) -> bool:
    """Whether an input of this kind can have this many tokens (g*g + 1 for a photo, g*g for a scene)."""
    try:
        grid_side(context_length) if kind == "image" else forward.scene_side(context_length) if kind == SCENE else None
    except ValueError:
        return False
    return True
