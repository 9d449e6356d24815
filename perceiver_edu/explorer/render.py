"""Figures to PNG bytes, fast: the part of every redraw that is not the model.

A `Painter` owns one view's Figure and turns a view entry (views.py) into PNG bytes. A view that
can swap new numbers into the figure it drew last (same shapes, other head or layer) is redrawn by
blitting: the fixed parts (axes, ticks, labels) are drawn once, their pixels kept, and only what
moves is drawn on top of them. Everything else is drawn whole.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import PIL.Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import viz

# Screen PNGs at the project's one figure DPI (viz.DPI), so the explorer's figures read like the
# chapters' figures.
DPI = viz.DPI


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
        buffer, format="png", compress_level=1
    )
    return buffer.getvalue()


class Blitter:
    """Redraw one figure quickly when only its numbers change (another head, layer or seed).

    Everything that stays (axes, ticks, axis labels) is drawn once and its pixels are kept; each
    update pastes them back and draws on top only what changes: the image, the divider and its
    labels, the frame, the title and the colour bar (whose ticks follow the new colour scale).
    This is matplotlib's blitting, used for animation, here to answer a slider in a few ms.
    """

    def __init__(self, fig: Figure) -> None:
        self.fig = fig
        self.background = None
        on_maps, colour_bars = [], []
        for ax in fig.axes:
            if getattr(ax, "_colorbar", None) is not None:  # its ticks follow the new colour scale
                colour_bars.append(ax)
            else:  # a map (and its zoomed panel): the numbers, the divider, the frame and the title move
                on_maps += sorted(
                    [*ax.images, *ax.lines, *ax.texts, *ax.spines.values(), ax.title], key=lambda a: a.get_zorder()
                )
        self.moving = on_maps + colour_bars

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


def message_figure(fig: Figure, title: str, text: str) -> None:
    """A figure that says, in words, why there is nothing to draw."""
    fig.clear()
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)


class Painter:
    """One view's Figure and the last thing drawn into it: turns (view, run, pick) into PNG bytes.

    `view` is an entry of views.VIEWS. When the view has a fast path, the painter keeps the figure
    it laid out for each of the last `keep` layouts (`view.layout`: the shapes that place the
    axes), with its blitter: a picture whose layout was seen before gets its numbers swapped in
    and blitted, in a few ms, and only a layout seen for the first time is laid out and drawn whole
    (constrained layout, a few hundred ms: most of it measuring tick labels). Switching an
    architecture control back and forth (8 -> 16 -> 8 latents) therefore costs one layout per
    shape, not one per change. Views without a fast path draw their one figure whole every time.
    `figure` is the Figure shown last.
    """

    def __init__(self, view: Any, keep: int = 6) -> None:
        self.view = view
        self.keep = keep
        self.figure = self._new_figure()
        self._laid_out: OrderedDict[Hashable, tuple[Figure, Blitter]] = OrderedDict()  # layout -> figure, oldest first

    def _new_figure(self) -> Figure:
        return Figure(figsize=self.view.size, dpi=DPI, layout="constrained")

    def paint(self, run: Any, pick: Any) -> bytes:
        view = self.view
        if view.fast is None:
            fig = self.figure
            fig.clear()
            fig.set_layout_engine("constrained")
            view.draw(fig, run, pick)
            return figure_png(fig)
        layout = view.layout(run, pick)
        kept = self._laid_out.get(layout)
        if kept is not None and view.fast(kept[0], run, pick):
            self._laid_out.move_to_end(layout)
            self.figure = kept[0]
            return kept[1].png()  # same axes, new numbers: draw only what moved
        self._laid_out.pop(layout, None)  # in case the view fails half-way through
        fig = self.figure = self._new_figure()
        view.draw(fig, run, pick)
        png = figure_png(fig)
        # the constrained layout has placed the axes; a picture of the same layout with other
        # numbers fits the same places, and laying out every label again is most of a redraw
        fig.set_layout_engine("none")
        self._laid_out[layout] = (fig, Blitter(fig))
        while len(self._laid_out) > self.keep:
            self._laid_out.popitem(last=False)
        return png
