"""The explorer's views (its tabs), one entry each: title, size, what it depends on, how it draws.

Adding a view is adding one `View` to `VIEWS`: the widget makes its tab, its Figure and its
ipywidgets.Image from the entry, redraws it when a control it `depends` on changes (and only
then, and only while its tab is open), and catches whatever its `draw` raises.
Letters: b batch, s context length, l latents, h heads, d head dim, e embed dim, n keys (s + l).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure

from .. import viz
from ..inputs import grid_side, sample_image
from ..trace import image_attention
from .forward import SCENE, Run
from .render import message_figure


@dataclass(frozen=True)
class Pick:
    """What to show of a run: the view controls, already clamped to the run's shape."""

    layer: int
    head: int
    latent: int

    @classmethod
    def clamped(cls, run: Run, layer: int, head: int, latent: int) -> Pick:
        c = run.config
        return cls(min(layer, c.depth - 1), min(head, c.n_heads - 1), min(latent, c.n_latents - 1))


@dataclass(frozen=True)
class View:
    """One tab of the explorer.

    key      the name used by `explorer.show(key)`, `explorer.views[key]`, `explorer.figures[key]`
    title    the tab's title
    size     (width, height) of its Figure in inches, at viz.DPI
    depends  the view controls ("layer", "head", "latent") it reads: a change of another one
             leaves it alone; a new run always redraws it
    draw     draw(fig, run, pick): draw the whole figure into `fig`, which comes empty
    fast     optional fast(fig, run, pick) -> bool: put new numbers into the figure drawn last,
             False when it cannot; used only while `layout(run, pick)` is what it was last time
    layout   optional layout(run, pick) -> a key of everything that places the figure's axes
    """

    key: str
    title: str
    size: tuple[float, float]
    depends: tuple[str, ...]
    draw: Callable[[Figure, Run, Pick], None]
    fast: Callable[[Figure, Run, Pick], bool] | None = None
    layout: Callable[[Run, Pick], Hashable] | None = None


# -- how each view draws --------------------------------------------------------------------------


def _head_title(run: Run, pick: Pick) -> str:
    l, n = run.trace.attentions[pick.layer].shape[-2:]
    return f"layer {pick.layer}, head {pick.head}: {l} latents over {n} keys (s = {run.trace.context_length})"


def _head_map(run: Run, pick: Pick):
    return run.trace.attentions[pick.layer][0, pick.head]  # [l, n]


def draw_head(fig: Figure, run: Run, pick: Pick) -> None:
    viz.plot_attention_map(_head_map(run, pick), run.trace.context_length, title=_head_title(run, pick), fig=fig)


def fast_head(fig: Figure, run: Run, pick: Pick) -> bool:
    return viz.update_attention_map(fig, _head_map(run, pick), title=_head_title(run, pick))


def layout_head(run: Run, pick: Pick) -> Hashable:
    return tuple(_head_map(run, pick).shape), run.trace.context_length


def draw_heads(fig: Figure, run: Run, pick: Pick) -> None:
    h = run.config.n_heads
    cols = min(h, 2)
    fig.set_size_inches(6.4 * cols + 1.0, 2.7 * math.ceil(h / cols) + 0.9)  # viz's own size: two heads a row
    viz.plot_heads(run.trace.attentions[pick.layer][0], run.trace.context_length, layer=pick.layer, fig=fig)


def draw_share(fig: Figure, run: Run, pick: Pick) -> None:
    viz.plot_context_share(run.trace, fig=fig)


def draw_entropy(fig: Figure, run: Run, pick: Pick) -> None:
    viz.plot_entropy(run.trace, fig=fig)


def draw_image(fig: Figure, run: Run, pick: Pick) -> None:
    """Attention on the picture: the scene's canvas (all latents of a head), or the photo (one latent)."""
    if run.input_kind == SCENE:
        _draw_on_scene(fig, run, pick)
        return
    if run.input_kind != "image":
        fig.set_size_inches(6.4, 3.0)
        message_figure(
            fig,
            "attention on the image",
            "Choose input 'scene' or 'image' to see the attention on the picture's patches.",
        )
        return
    fig.set_size_inches(6.4, 6.4)  # 640 x 640 pixels at viz.DPI: the patches and the bar labels readable
    s = run.trace.context_length
    row = run.trace.attentions[pick.layer][0, pick.head, pick.latent]  # [n]
    viz.plot_attention_on_image(
        row,
        sample_image(grid_side(s)),
        context_length=s,
        fig=fig,
        title=f"layer {pick.layer}, head {pick.head}, latent {pick.latent} on the photo",
    )


SCENE_LATENTS = 8  # latents drawn side by side on a scene; the latent slider pages through more


def _draw_on_scene(fig: Figure, run: Run, pick: Pick) -> None:
    """Each latent's attention over the scene's g x g patches (no CLS): the chosen head, and all heads' mean."""
    # [h, l, s]: the context part, patches row by row, each head's row renormalised over the patches;
    # the mean of heads is then scenes.latent_maps', the measure chapter 4 prints
    attn = image_attention(run.trace)[pick.layer, 0]
    first = pick.latent // SCENE_LATENTS * SCENE_LATENTS
    latents = list(range(first, min(first + SCENE_LATENTS, attn.shape[1])))
    maps = torch.stack([attn[pick.head], attn.mean(dim=0)])  # [2, l, s]
    fig.set_size_inches(1.75 * len(latents) + 1.5, 1.95 * 2 + 1.2)  # viz's panel size, two rows
    scene = run.scene
    weights = "random weights" if run.weights == "random" else f"trained {run.weights!r}"
    viz.plot_latents_on_scene(
        maps,
        scene.images[0],
        boxes=scene.boxes[0],
        labels=scene.labels[0],
        latents=latents,
        row_labels=[f"head {pick.head}", "mean of heads"],
        fig=fig,
        title=(
            f"layer {pick.layer}: where each latent looks on held-out scene {run.scene_index} ({weights}); "
            f"share of its attention on the context, per patch"
        ),
    )


# -- the registry: the order is the order of the tabs; only the visible tab is drawn ----------------

VIEWS: tuple[View, ...] = (
    View("head", "chosen head", (9, 3.4), ("layer", "head"), draw_head, fast=fast_head, layout=layout_head),
    View("heads", "heads of the layer", (10, 3.2), ("layer",), draw_heads),
    View("share", "context vs latents", (10, 4.2), (), draw_share),
    View("entropy", "entropy", (10, 4.2), (), draw_entropy),
    View("image", "on the image", (6.4, 6.4), ("layer", "head", "latent"), draw_image),
)
