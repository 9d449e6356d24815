"""Figures of what the latents look at: attention maps, context share, entropy, QK-norm, image overlays.

Every function returns a `matplotlib.figure.Figure` built without pyplot, so nothing is left open
in pyplot's figure list (a widget can redraw a thousand times without leaking memory). Pass
`fig=` to draw into an existing figure: it is cleared first, which is how the explorer reuses one.
In a notebook, a returned Figure shows itself when it is the cell's last expression.

Every attention map has keys on x and latents on y, a colour bar in attention weight, and a
vertical line at x = s - 0.5 between the context keys (0..s-1) and the latents' own keys
(s..n-1), drawn whenever the latents join the keys/values.
Letters: b batch, s context length, l latents, h heads, d head dim, e embed dim, n keys (s + l).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from .inputs import grid_side

DPI = 100  # one resolution for every figure of the project: chapters, README pictures and the explorer
CMAP = "viridis"  # attention weight: dark = ignored, bright = looked at
DIVIDER = dict(color="white", linewidth=1.5, linestyle="--")


# -- checking inputs ------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str, ndim: int, shape_letters: str) -> np.ndarray:
    """A torch tensor or array -> float numpy array of `ndim` dims, or a message naming the argument."""
    if hasattr(x, "detach"):  # a torch.Tensor, possibly on a GPU or needing grad
        x = x.detach().float().cpu().numpy()
    elif isinstance(x, (list, tuple)):
        x = np.asarray(x, dtype=float)
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array of shape [{shape_letters}]; got {type(x).__name__}"
        )
    if x.ndim != ndim:
        hint = ""
        if x.ndim == ndim + 1:
            hint = " (pick one example/head first, e.g. attn[0])"
        elif x.ndim > ndim + 1:
            hint = " (index the batch and head first, e.g. trace.attentions[layer][0, head])"
        raise ValueError(f"{name} must be {ndim}-D [{shape_letters}]; got shape {tuple(x.shape)}{hint}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); there is nothing to draw")
    return x.astype(float, copy=False)


def _check_context_length(context_length: Any, n_keys: int, name: str = "attn") -> int:
    if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)):
        raise TypeError(f"context_length must be an int (s, the number of context tokens); got {context_length!r}")
    if not 0 < context_length <= n_keys:
        raise ValueError(
            f"context_length must be between 1 and the number of keys n = {n_keys} of {name}; got {context_length}"
        )
    return int(context_length)


def _check_index(value: Any, size: int, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {value!r}")
    if not 0 <= value < size:
        raise ValueError(f"{name} must be between 0 and {size - 1} ({size} {what}); got {value}")
    return int(value)


def _check_trace(trace: Any, name: str = "trace") -> None:
    if not all(hasattr(trace, a) for a in ("attentions", "scores", "context_length", "context_share", "entropy")):
        raise TypeError(f"{name} must be the Trace from model(context, return_trace=True); got {type(trace).__name__}")


def _new_figure(fig: Figure | None, figsize: tuple[float, float]) -> Figure:
    """A fresh Figure (never registered with pyplot), or `fig` cleared for reuse."""
    if fig is None:
        return Figure(figsize=figsize, dpi=DPI, layout="constrained")
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib.figure.Figure or None; got {type(fig).__name__}")
    fig.clear()
    return fig


# -- drawing helpers ------------------------------------------------------------------------------


def _panel_grid(fig: Figure | None, k: int, max_cols: int, panel: tuple[float, float], margin: tuple[float, float]):
    """A figure sized for k small panels, at most max_cols per row: (fig, axes [rows, cols])."""
    cols = min(k, max_cols)
    rows = math.ceil(k / cols)
    fig = _new_figure(fig, (panel[0] * cols + margin[0], panel[1] * rows + margin[1]))
    return fig, fig.subplots(rows, cols, squeeze=False)


def _draw_map(ax, attn: np.ndarray, context_length: int, vmax: float, xlabel: bool = True, ylabel: bool = True):
    """One [l, n] map on `ax`, with the context | latents divider when the latents are among the keys."""
    image = ax.imshow(attn, aspect="auto", cmap=CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
    n_keys = attn.shape[1]
    if context_length < n_keys:
        ax.axvline(context_length - 0.5, **DIVIDER)
    if xlabel:
        ax.set_xlabel(
            f"key n (context 0..{context_length - 1}"
            + (f" | latents {context_length}..{n_keys - 1})" if context_length < n_keys else ")")
        )
    if ylabel:
        ax.set_ylabel("latent l (query)")
    return image


def _draw_zoom(ax, attn: np.ndarray, context_length: int, vmax: float, xlabel: bool = True) -> None:
    """The keys right of the divider, widened: at s = 257 the l latent columns are 3 % of the full map."""
    keys = attn[:, context_length:]  # [l, n - s]
    ax.imshow(keys, aspect="auto", cmap=CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(keys.shape[1]), [str(i) for i in range(keys.shape[1])], fontsize=7)
    ax.tick_params(labelleft=False)
    ax.set_title("latents' keys\n(zoomed)", fontsize=8)
    if xlabel:
        ax.set_xlabel("latent key")


def _map_grid(fig: Figure, rows: int, cols: int, zoomed: bool):
    """A gridspec of rows x cols maps; with `zoomed` each map has a narrow column right of it for its zoom."""
    if not zoomed:
        return fig.add_gridspec(rows, cols)
    return fig.add_gridspec(rows, 2 * cols, width_ratios=[5, 1.1] * cols)


def _map_panel(
    fig: Figure,
    grid,
    row: int,
    col: int,
    attn: np.ndarray,
    context_length: int,
    vmax: float,
    *,
    xlabel: bool = True,
    ylabel: bool = True,
):
    """Map number (row, col) of a `_map_grid`, and right of it the latents' own keys zoomed when they are keys.

    Returns (map axes, zoom axes or None, image). Both share the colour scale [0, vmax] and the rows.
    """
    zoomed = context_length < attn.shape[1]
    ax = fig.add_subplot(grid[row, 2 * col] if zoomed else grid[row, col])
    zoom = fig.add_subplot(grid[row, 2 * col + 1], sharey=ax) if zoomed else None
    image = _draw_map(ax, attn, context_length, vmax, xlabel=xlabel, ylabel=ylabel)
    if zoom is not None:
        _draw_zoom(zoom, attn, context_length, vmax, xlabel=xlabel)
    ax._pe_zoom = zoom  # update_attention_map finds the zoom panel of a map here
    return ax, zoom, image


def _vmax(*arrays: np.ndarray) -> float:
    """A shared top of the colour scale, so maps side by side can be compared by colour."""
    top = max(float(np.nanmax(a)) for a in arrays)
    return top if top > 0 else 1.0


def value_range(*values: Any) -> tuple[float, float]:
    """(lowest, highest) over all the given tensors or arrays: one colour scale for figures meant to be compared.

    E.g. `viz.plot_entropy(trace_init, limits=viz.value_range(trace_init.entropy(), trace.entropy()))`.
    """
    if not values:
        raise ValueError("value_range needs at least one tensor or array")
    arrays = [v.detach().float().cpu().numpy() if hasattr(v, "detach") else np.asarray(v, dtype=float) for v in values]
    lo = min(float(np.nanmin(a)) for a in arrays)
    hi = max(float(np.nanmax(a)) for a in arrays)
    return lo, hi


def _check_vmax(vmax: Any) -> float:
    if hasattr(vmax, "item"):  # a 0-d tensor or numpy number, e.g. maps.max()
        vmax = vmax.item()
    if isinstance(vmax, bool) or not isinstance(vmax, (int, float)) or not vmax > 0:
        raise ValueError(f"vmax must be a positive number (the top of the colour scale) or None; got {vmax!r}")
    return float(vmax)


def _check_limits(limits: Any) -> tuple[float, float] | None:
    if limits is None:
        return None
    try:
        lo, hi = (float(v) for v in limits)
    except (TypeError, ValueError):
        raise TypeError(
            f"limits must be a pair (low, high) of numbers, e.g. viz.value_range(...); got {limits!r}"
        ) from None
    if not lo < hi:
        raise ValueError(f"limits must have low < high; got ({lo}, {hi})")
    return lo, hi


# -- attention maps -------------------------------------------------------------------------------


def plot_attention_map(
    attn: Any, context_length: int, *, title: str | None = None, fig: Figure | None = None
) -> Figure:
    """One head's attention [l, n]: each row is a latent, each column a key (context, then latents).

    When the latents are among the keys, a second panel right of the map shows their l columns
    widened, on the same colour scale, so what the latents take from each other can be read.
    """
    attn = _to_numpy(attn, "attn", 2, "l, n")
    context_length = _check_context_length(context_length, attn.shape[1])
    fig = _new_figure(fig, (9, 3.4))
    grid = _map_grid(fig, 1, 1, context_length < attn.shape[1])
    ax, zoom, image = _map_panel(fig, grid, 0, 0, attn, context_length, _vmax(attn))
    l, n = attn.shape
    ax.set_title(title or f"Attention of {l} latents over {n} keys (s = {context_length})")
    fig.colorbar(image, ax=[ax] if zoom is None else [ax, zoom], label="attention weight (row sums to 1)")
    return fig


def update_attention_map(fig: Figure, attn: Any, *, title: str | None = None) -> bool:
    """Put new numbers [l, n] into a map `plot_attention_map` drew, keeping axes, ticks and labels.

    For a redraw that must be fast (the explorer's head slider): same shape, new weights, the colour
    scale follows them as `plot_attention_map` would set it. Returns False, changing nothing, when
    `fig` does not hold a map of that shape; then draw it again with `plot_attention_map(..., fig=fig)`.
    """
    values = _to_numpy(attn, "attn", 2, "l, n")
    ax = fig.axes[0] if fig.axes else None
    if ax is None or len(ax.images) != 1 or ax.images[0].get_array().shape != values.shape:
        return False
    zoom = getattr(ax, "_pe_zoom", None)
    vmax = _vmax(values)
    ax.images[0].set_data(values)
    ax.images[0].set_clim(0.0, vmax)  # the colour bar follows its mappable
    if zoom is not None:
        s = values.shape[1] - zoom.images[0].get_array().shape[1]
        zoom.images[0].set_data(values[:, s:])
        zoom.images[0].set_clim(0.0, vmax)
    if title is not None:
        ax.set_title(title)
    return True


def plot_heads(attn: Any, context_length: int, *, layer: int | None = None, fig: Figure | None = None) -> Figure:
    """All heads of one layer, attn [h, l, n], two per row, on one colour scale (each with its latents' keys zoomed)."""
    attn = _to_numpy(attn, "attn", 3, "h, l, n")
    context_length = _check_context_length(context_length, attn.shape[2])
    h = attn.shape[0]
    cols = min(h, 2)
    rows = math.ceil(h / cols)
    fig = _new_figure(fig, (6.4 * cols + 1.0, 2.7 * rows + 0.9))
    grid = _map_grid(fig, rows, cols, context_length < attn.shape[2])
    vmax = _vmax(attn)
    drawn = []
    for i in range(h):
        r, c = divmod(i, cols)
        last_row = i + cols >= h
        ax, zoom, image = _map_panel(fig, grid, r, c, attn[i], context_length, vmax, xlabel=last_row, ylabel=(c == 0))
        ax.set_title(f"head {i}", fontsize=10, loc="left")
        drawn += [ax] if zoom is None else [ax, zoom]
    where = "" if layer is None else f"layer {layer}: "
    fig.suptitle(f"{where}all {h} heads, latents x keys (context | latents, s = {context_length}); one colour scale")
    fig.colorbar(image, ax=drawn, label="attention weight", shrink=0.9)
    return fig


def plot_layers(trace: Any, *, example: int = 0, head: int = 0, fig: Figure | None = None) -> Figure:
    """One head's map in every layer, top to bottom: how what the latents look at changes with depth."""
    _check_trace(trace)
    first = trace.attentions[0]  # [b, h, l, n]
    example = _check_index(example, first.shape[0], "example", "examples in the batch")
    head = _check_index(head, first.shape[1], "head", "heads")
    maps = [_to_numpy(a[example, head], "trace.attentions", 2, "l, n") for a in trace.attentions]
    depth = len(maps)
    fig = _new_figure(fig, (9, 2.2 * depth + 1.0))
    grid = _map_grid(fig, depth, 1, trace.context_length < trace.n_keys)
    vmax = _vmax(*maps)
    drawn = []
    for i, a in enumerate(maps):
        ax, zoom, image = _map_panel(fig, grid, i, 0, a, trace.context_length, vmax, xlabel=(i == depth - 1))
        ax.set_title(f"layer {i}", fontsize=10, loc="left")
        drawn += [ax] if zoom is None else [ax, zoom]
    fig.suptitle(f"Head {head}, example {example}: attention in each of the {depth} layers (one colour scale)")
    fig.colorbar(image, ax=drawn, label="attention weight", shrink=0.9)
    return fig


# -- summaries per head and layer -----------------------------------------------------------------


def _per_head_layer(
    fig: Figure,
    values: np.ndarray,
    baseline: float,
    *,
    title: str,
    what: str,
    norm,
    cmap: str,
    baseline_name: str,
    limits: tuple[float, float] | None,
) -> Figure:
    """Left: the mean over latents as a [layer x head] heatmap. Right: every latent's value, with the baseline.

    values [depth, h, l] for one example. The colour scale spans `limits` (the data's own range
    when None), so that differences between heads show; the right panel's y axis spans the same
    range and the baseline.
    """
    depth, h, l = values.shape
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.4])
    mean = values.mean(axis=-1)  # [depth, h]
    image = left.imshow(mean, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    if depth * h <= 64:  # numbers are readable only on small grids
        for (i, j), v in np.ndenumerate(mean):
            left.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black",
                bbox=dict(facecolor="white", alpha=0.6, linewidth=0, pad=1),
            )
    left.set_xticks(range(h))
    left.set_yticks(range(depth))
    left.set_xlabel("head h")
    left.set_ylabel("layer")
    left.set_title(f"mean over the {l} latents")
    bar = fig.colorbar(
        image, ax=left, label=f"{what}, colour {norm.vmin:.2f} .. {norm.vmax:.2f}", location="bottom", shrink=0.9
    )
    if norm.vmin <= baseline <= norm.vmax:
        bar.ax.axvline(baseline, color="black", linestyle="--", linewidth=1)  # where the baseline sits on the scale

    # every latent as a dot, one column of dots per (layer, head); the baseline as a dashed line
    x = np.arange(depth * h)
    rng = np.random.default_rng(0)  # a fixed jitter so dots of one column do not hide each other
    for k in range(depth * h):
        i, j = divmod(k, h)
        right.scatter(
            k + rng.uniform(-0.2, 0.2, l),
            values[i, j],
            s=14,
            c=values[i, j],
            cmap=cmap,
            norm=norm,
            edgecolors="grey",
            linewidths=0.4,
        )  # an edge keeps pale dots visible on white
    right.axhline(baseline, color="black", linestyle="--", linewidth=1, label=baseline_name)
    if limits is not None:  # figures meant to be compared: the same y range, which always shows the baseline
        lo, hi = min(limits[0], baseline), max(limits[1], baseline)
        pad = 0.04 * (hi - lo)
        right.set_ylim(lo - pad, hi + pad)
    for i in range(1, depth):
        right.axvline(i * h - 0.5, color="grey", linewidth=0.5)
    if depth * h <= 24:
        right.set_xticks(x, [f"L{i}h{j}" for i in range(depth) for j in range(h)], rotation=90, fontsize=7)
        right.set_xlabel("layer L, head h")
    else:  # one label per column would overlap: label the layers, heads run 0..h-1 inside each band
        right.set_xticks([i * h + (h - 1) / 2 for i in range(depth)], [f"layer {i}" for i in range(depth)], fontsize=8)
        right.set_xlabel(f"layer; inside each band heads 0..{h - 1}, left to right")
    right.set_ylabel(what)
    right.set_title("each latent")
    right.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    return fig


def _span(values: np.ndarray, limits: tuple[float, float] | None) -> tuple[float, float]:
    """The colour range: `limits`, or the values' own range, never empty."""
    lo, hi = limits if limits is not None else (float(values.min()), float(values.max()))
    return (lo, hi) if hi > lo else (lo - 1e-3, hi + 1e-3)


def plot_context_share(
    trace: Any, *, example: int = 0, limits: Any = None, title: str | None = None, fig: Figure | None = None
) -> Figure:
    """Share of each latent's attention that goes to the context, per head and layer, vs the uniform s / n.

    Above the baseline (red) a latent prefers the context; below it (blue) it prefers the latents,
    i.e. keeps what it already holds. The latents get the rest: 1 - share, uniform l / n.
    `limits` (low, high) fixes the scale, to compare two figures (see `value_range`).
    """
    _check_trace(trace)
    limits = _check_limits(limits)
    share = trace.context_share()  # [depth, b, h, l]
    example = _check_index(example, share.shape[1], "example", "examples in the batch")
    values = _to_numpy(share[:, example], "context share", 3, "depth, h, l")
    uniform = trace.uniform_context_share()
    s, n = trace.context_length, trace.n_keys
    fig = _new_figure(fig, (10, 4.4))
    lo, hi = _span(values, limits)
    # red above the uniform share, blue below; the centre needs a little room on both sides
    norm = TwoSlopeNorm(vcenter=uniform, vmin=min(lo, uniform - 1e-3), vmax=max(hi, uniform + 1e-3))
    heading = (
        f"Share of attention on the context (s = {s}) vs on the latents (l = {n - s}); "
        f"uniform would give s / n = {uniform:.3f}"
    )
    if not trace.latents_in_kv:
        heading = f"Latents not in the keys/values: all attention goes to the context (share = 1, s = {s})"
    return _per_head_layer(
        fig,
        values,
        uniform,
        title=f"{title}\n{heading}" if title else heading,
        what="context share",
        norm=norm,
        cmap="coolwarm",
        baseline_name=f"uniform s / n = {uniform:.3f}",
        limits=limits,
    )


def plot_entropy(
    trace: Any, *, example: int = 0, limits: Any = None, title: str | None = None, fig: Figure | None = None
) -> Figure:
    """Attention entropy in nats per head and layer: 0 = one key, log(n) = all keys equally (the dashed line).

    The colour runs over the values' own range (or `limits`), not 0..log(n): on a 0..log(n) scale
    most heads look alike. Pass the same `limits` to figures meant to be compared (see `value_range`).
    """
    _check_trace(trace)
    limits = _check_limits(limits)
    entropy = trace.entropy()  # [depth, b, h, l]
    example = _check_index(example, entropy.shape[1], "example", "examples in the batch")
    values = _to_numpy(entropy[:, example], "entropy", 3, "depth, h, l")
    top = trace.max_entropy()
    fig = _new_figure(fig, (10, 4.4))
    heading = f"Attention entropy (nats) over n = {trace.n_keys} keys; uniform = log(n) = {top:.2f}"
    return _per_head_layer(
        fig,
        values,
        top,
        title=f"{title}\n{heading}" if title else heading,
        what="entropy (nats)",
        norm=Normalize(*_span(values, limits)),
        cmap="magma_r",
        baseline_name=f"max log(n) = {top:.2f}",
        limits=limits,
    )


def plot_qk_norm_comparison(trace_off: Any, trace_on: Any, *, example: int = 0, fig: Figure | None = None) -> Figure:
    """QK-norm off vs on, same seed and input: entropy (top) and score range max - min (bottom), per head x layer."""
    _check_trace(trace_off, "trace_off")
    _check_trace(trace_on, "trace_on")
    shape_off, shape_on = tuple(trace_off.attentions[0].shape), tuple(trace_on.attentions[0].shape)
    if (len(trace_off.attentions), shape_off) != (len(trace_on.attentions), shape_on):
        raise ValueError(
            "trace_off and trace_on must come from the same architecture and input (only qk_norm differing); got "
            f"depth {len(trace_off.attentions)} with attentions {shape_off} vs depth {len(trace_on.attentions)} "
            f"with {shape_on}"
        )
    example = _check_index(example, shape_off[0], "example", "examples in the batch")
    entropy = [_to_numpy(t.entropy()[:, example].mean(-1), "entropy", 2, "depth, h") for t in (trace_off, trace_on)]

    def score_range(t):  # [depth, h]: how far apart the highest and lowest score of a head are
        s = np.stack([_to_numpy(x[example], "trace.scores", 3, "h, l, n") for x in t.scores])  # [depth, h, l, n]
        return s.max(axis=(-1, -2)) - s.min(axis=(-1, -2))

    ranges = [score_range(trace_off), score_range(trace_on)]
    fig = _new_figure(fig, (9, 5.6))
    axes = fig.subplots(2, 2, sharex=True, sharey=True)
    top = trace_off.max_entropy()
    low, high = _span(np.stack(entropy), None)  # both panels' range: 0..log(n) would make every cell alike
    rows = [
        (entropy, dict(vmin=low, vmax=high), "magma_r", f"entropy (nats; uniform = {top:.2f})", "{:.2f}"),
        (ranges, dict(vmin=0.0, vmax=_vmax(*ranges)), "viridis", "score range (max - min)", "{:.1f}"),
    ]
    for r, (pair, limits, cmap, label, fmt) in enumerate(rows):
        for c, (values, name) in enumerate(zip(pair, ("QK-norm off", "QK-norm on"))):
            ax = axes[r, c]
            image = ax.imshow(values, cmap=cmap, aspect="auto", interpolation="nearest", **limits)
            if values.size <= 64:
                for (i, j), v in np.ndenumerate(values):
                    ax.text(
                        j,
                        i,
                        fmt.format(v),
                        ha="center",
                        va="center",
                        fontsize=8,
                        bbox=dict(facecolor="white", alpha=0.6, linewidth=0, pad=1),
                    )
            ax.set_title(f"{name}: {'entropy' if r == 0 else 'score range'}", fontsize=10)
            ax.set_xticks(range(values.shape[1]))
            ax.set_yticks(range(values.shape[0]))
            if r == 1:
                ax.set_xlabel("head h")
            if c == 0:
                ax.set_ylabel("layer")
        fig.colorbar(image, ax=axes[r, :], label=label, shrink=0.9)
    fig.suptitle(f"QK-norm off vs on, same weights seed and input (example {example})")
    return fig


# -- the context as an image ----------------------------------------------------------------------


def plot_attention_on_image(
    attn_row: Any,
    image: Any = None,
    *,
    context_length: int,
    title: str | None = None,
    vmax: float | None = None,
    fig: Figure | None = None,
) -> Figure:
    """One latent's attention [n] over a g x g patch grid (+ CLS), drawn over the photo the patches came from.

    Keys 1..g*g are the patches row by row, key 0 the CLS token, keys s..n-1 the latents (when they
    join the keys). The patch weights are drawn on the image; CLS and the latents get a bar chart
    below, split by the context | latents divider, so every weight of the row is on the figure.
    `vmax` fixes the top of the colour scale (and the bars' axis): give two latents the same one to
    compare them by colour; by default each figure spans its own largest patch weight.
    """
    row = _to_numpy(attn_row, "attn_row", 1, "n")
    context_length = _check_context_length(context_length, row.shape[0], "attn_row")
    side = grid_side(context_length)  # explains itself when s is not g*g + 1
    if image is not None:
        image = _to_numpy(image, "image", 3, "H, W, 3")
        if image.shape[-1] != 3:
            raise ValueError(f"image must be [H, W, 3] RGB; got shape {tuple(image.shape)}")
        image = np.clip(image, 0.0, 1.0) if image.max() <= 1.0 else np.clip(image / 255.0, 0.0, 1.0)
    patches = row[1:context_length].reshape(side, side)  # row-major, as image_context cut them
    others = np.concatenate([row[:1], row[context_length:]])  # CLS, then the latents' own keys
    n_latent_keys = row.shape[0] - context_length

    fig = _new_figure(fig, (6.4, 6.4))
    top, bottom = fig.subplots(2, 1, height_ratios=[4, 1])
    extent = (0, side, side, 0)  # one unit per patch, so image and grid line up
    if image is not None:
        top.imshow(image, extent=extent, interpolation="bilinear")
    shared = vmax is not None
    vmax = _check_vmax(vmax) if shared else _vmax(patches)
    # over a photo, the more attention a patch gets the more opaque its colour: ignored patches
    # stay visible, so a learner can see what the attended ones show
    alpha = 0.1 + 0.75 * np.clip(patches / vmax, 0.0, 1.0) if image is not None else None
    overlay = top.imshow(
        patches, extent=extent, cmap="inferno", vmin=0.0, vmax=vmax, alpha=alpha, interpolation="nearest"
    )
    top.set_xlabel(f"patch column (0..{side - 1})")
    top.set_ylabel(f"patch row (0..{side - 1})")
    top.set_title(title or f"Attention over a {side} x {side} patch grid + CLS (s = {context_length})")
    fig.colorbar(
        overlay,
        ax=top,
        label="attention weight on each patch\n" + ("(shared scale)" if shared else "(this figure's own scale)"),
    )

    labels = ["CLS"] + [f"l{i}" for i in range(n_latent_keys)]
    colors = ["tab:orange"] + ["tab:blue"] * n_latent_keys
    bottom.bar(np.arange(len(others)), others, color=colors)
    if n_latent_keys:
        bottom.axvline(0.5, color="black", linestyle="--", linewidth=1)  # context | latents
    bottom.set_xticks(np.arange(len(others)), labels, fontsize=8)
    bottom.set_xlabel("key: CLS (context) | latents")
    bottom.set_ylabel("weight")
    patch_sum, latent_sum = patches.sum(), row[context_length:].sum()
    bottom.set_title(
        f"patches {patch_sum:.2f}, CLS {row[0]:.3f}, latents {latent_sum:.2f} of this row's attention", fontsize=9
    )
    return fig


# -- chapter 4: digits ----------------------------------------------------------------------------
# Figures for the resampler trained on scikit-learn's 8 x 8 digits (perceiver_edu/digits.py): the
# context is one token per pixel, so an attention row over the context is itself an 8 x 8 image.


def _digit_side(n_pixels: int, name: str) -> int:
    side = math.isqrt(n_pixels)
    if side * side != n_pixels:
        raise ValueError(f"{name} must have a square number of pixels (64 for an 8 x 8 digit); got {n_pixels}")
    return side


def plot_digits(
    images: Any, labels: Any = None, predictions: Any = None, *, title: str | None = None, fig: Figure | None = None
) -> Figure:
    """A row (or grid) of digits [k, 8, 8], each titled with its label, and the prediction in red when it is wrong."""
    images = _to_numpy(images, "images", 3, "k, 8, 8")
    k = images.shape[0]
    labels = None if labels is None else _to_numpy(labels, "labels", 1, "k").astype(int)
    predictions = None if predictions is None else _to_numpy(predictions, "predictions", 1, "k").astype(int)
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values is not None and len(values) != k:
            raise ValueError(f"{name} must give one number per image ({k}); got {len(values)}")
    fig, axes = _panel_grid(fig, k, 10, (1.25, 1.45), (1.2, 0.6))
    vmax = max(1.0, float(images.max()))
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.set_visible(False)
            continue
        image = ax.imshow(images[i], cmap="gray_r", vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        text, color = (f"{labels[i]}" if labels is not None else f"#{i}"), "black"
        if predictions is not None:
            wrong = labels is not None and predictions[i] != labels[i]
            text, color = (
                (f"{labels[i]} read as {predictions[i]}", "red") if wrong else (f"{text} -> {predictions[i]}", "black")
            )
        ax.set_title(text, fontsize=9, color=color)
    for ax in axes[:, 0]:
        ax.set_ylabel("y (0..7)", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("x (0..7)", fontsize=8)
    fig.suptitle(title or f"{k} digits, 8 x 8 pixels" + (" (label -> prediction)" if predictions is not None else ""))
    fig.colorbar(image, ax=axes, label="pixel brightness", shrink=0.8)
    return fig


def plot_training_curves(
    history: Any, *, target: float | None = None, title: str | None = None, fig: Figure | None = None
) -> Figure:
    """Training loss (left, log scale) and held-out accuracy (right) against the step.

    `history` is TrainResult.history (keys step, loss, test_accuracy), or a dict of them by name to
    draw several runs on the same axes, e.g. {"QK-norm off": a.history, "QK-norm on": b.history}.
    `target` draws the accuracy to beat as a dashed line.
    """
    runs = history if isinstance(history, dict) and "step" not in history else {None: history}
    for name, run in runs.items():
        missing = [key for key in ("step", "loss", "test_accuracy") if not isinstance(run, dict) or key not in run]
        if missing:
            where = "history" if name is None else f"history[{name!r}]"
            raise ValueError(
                f"{where} must be TrainResult.history, a dict with step, loss and test_accuracy; missing {missing}"
            )
        if not run["step"]:
            raise ValueError("history is empty: train for at least one evaluation (eval_every steps) first")
    fig = _new_figure(fig, (10, 3.6))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for name, run in runs.items():
        label = name or "training run"
        loss_ax.plot(run["step"], run["loss"], marker="o", markersize=3, label=label)
        acc_ax.plot(
            run["step"],
            run["test_accuracy"],
            marker="o",
            markersize=3,
            label=f"{label}: {run['test_accuracy'][-1]:.1f}% at the end",
        )
    if target is not None:
        acc_ax.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target {target:g}%")
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("training step")
    loss_ax.set_ylabel("cross-entropy loss (log scale)")
    loss_ax.set_title("training loss (mean since the last point)")
    acc_ax.set_xlabel("training step")
    acc_ax.set_ylabel("held-out accuracy (%)")
    acc_ax.set_ylim(0, 100)
    acc_ax.set_title("accuracy on the held-out digits")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title or "Learning to read digits")
    return fig


def plot_latents_on_digit(
    attn: Any,
    image: Any = None,
    *,
    layer: int | None = None,
    title: str | None = None,
    vmax: float | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Where each latent looks on the digit: attn [l, s] or [h, l, s] over its s = 64 pixels, one panel per latent.

    With [h, l, s] each head gets a row. Pass the context part of an attention row (keys 0..s-1,
    e.g. pe.image_attention(trace)[layer, example]); `image` [8, 8], when given, is outlined on
    every panel so the attention can be read against the strokes. `vmax` fixes the top of the colour
    scale: give two figures the same one (e.g. initial and trained) to compare them by colour.
    """
    ndim = attn.ndim if hasattr(attn, "ndim") else np.ndim(attn)
    attn = _to_numpy(attn, "attn", 2 if ndim == 2 else 3, "l, s] or [h, l, s")
    maps = attn[None] if attn.ndim == 2 else attn  # [h, l, s]
    h, l, s = maps.shape
    side = _digit_side(s, "attn")
    if image is not None:
        image = _to_numpy(image, "image", 2, "8, 8")
        if image.shape != (side, side):
            raise ValueError(
                f"image must be [{side}, {side}] like the attention's {s} pixels; got {tuple(image.shape)}"
            )
    maps = maps.reshape(h, l, side, side)  # pixel j is at row j // 8, column j % 8, as PixelEmbedding orders them
    cols = l
    fig = _new_figure(fig, (1.35 * cols + 1.4, 1.45 * h + 0.9))
    axes = fig.subplots(h, cols, squeeze=False)
    shared = vmax is not None
    vmax = _check_vmax(vmax) if shared else _vmax(maps)
    for i in range(h):
        for j in range(l):
            ax = axes[i, j]
            shown = ax.imshow(maps[i, j], cmap="inferno", vmin=0.0, vmax=vmax, interpolation="nearest")
            if image is not None:
                # the digit's strokes as an outline: the attention colours stay readable beneath
                ax.contour(image, levels=[0.5 * float(image.max() or 1.0)], colors="cyan", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"latent {j}", fontsize=9)
            if j == 0:
                ax.set_ylabel("y (0..7)" if attn.ndim == 2 else f"head {i}", fontsize=9)
            if i == h - 1:
                ax.set_xlabel("x (0..7)", fontsize=8)
    where = "" if layer is None else f"layer {layer}: "
    fig.suptitle(
        title
        or f"{where}where each latent looks on the digit"
        + (" (cyan: the digit's strokes)" if image is not None else "")
    )
    fig.colorbar(
        shown, ax=axes, label="attention weight\non each pixel" + (" (shared scale)" if shared else ""), shrink=0.9
    )
    return fig


def plot_entropy_change(
    before: Any, after: Any, *, max_entropy: float, title: str | None = None, fig: Figure | None = None
) -> Figure:
    """Mean attention entropy per (layer, head), before [depth, h] and after [depth, h] training, as paired bars.

    Lower is sharper: 0 = one pixel, `max_entropy` (the dashed line, log of the number of keys) = all alike.
    """
    before = _to_numpy(before, "before", 2, "depth, h")
    after = _to_numpy(after, "after", 2, "depth, h")
    if before.shape != after.shape:
        raise ValueError(f"before and after must have the same [depth, h] shape; got {before.shape} and {after.shape}")
    depth, h = before.shape
    x = np.arange(depth * h)
    fig = _new_figure(fig, (max(6.0, 0.8 * depth * h + 2), 3.8))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, before.ravel(), width=0.4, color="tab:gray", label="at initialisation")
    ax.bar(x + 0.2, after.ravel(), width=0.4, color="tab:purple", label="after training")
    ax.axhline(max_entropy, color="black", linestyle="--", linewidth=1, label=f"all keys alike, {max_entropy:.2f}")
    for i in range(1, depth):
        ax.axvline(i * h - 0.5, color="grey", linewidth=0.5)
    ax.set_xticks(x, [f"L{i}h{j}" for i in range(depth) for j in range(h)], fontsize=8)
    ax.set_xlabel("layer L, head h")
    ax.set_ylabel("entropy (nats), lower = sharper")
    ax.set_ylim(0, max_entropy * 1.3)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    sharper = int((after < before).sum())
    ax.set_title(title or f"Attention entropy before and after training: {sharper} of {depth * h} heads sharper")
    return fig


# -- scenes: several objects on one canvas --------------------------------------------------------
# Figures for the scenes models (perceiver_edu/scenes.py): a canvas [H, W] is cut into a gh x gw
# grid of patches, one context token per patch, row by row; each object has a box (y0, x0, y1, x1)
# in pixels, end-exclusive. An attention row over the s = gh * gw patches is itself a small image.


def _canvas(image: Any, name: str = "image") -> np.ndarray:
    """[H, W] grey or [H, W, 3] colour -> float array, or a message naming the argument."""
    ndim = image.ndim if hasattr(image, "ndim") else np.ndim(image)
    return _to_numpy(image, name, 3 if ndim == 3 else 2, "H, W] or [H, W, 3")


def _scene_grid(s: int, canvas: tuple[int, int], grid: Any, name: str) -> tuple[int, int]:
    """(gh, gw): the patch grid an attention row of s weights covers; square canvases need no `grid`."""
    if grid is None:
        height, width = canvas
        side = math.isqrt(s * height // width) if width else 0
        grid = (side, s // side) if side and side * (s // side) == s else None
        if grid is None or grid[0] * width != grid[1] * height:
            raise ValueError(
                f"{name} has {s} weights per row, which do not tile the {height} x {width} canvas as a "
                f"grid of square patches; pass grid=(rows, columns)"
            )
    gh, gw = (int(v) for v in grid)
    if gh * gw != s:
        raise ValueError(f"grid={tuple(grid)} has {gh * gw} patches but {name} has {s} weights per row")
    if canvas[0] % gh or canvas[1] % gw:
        raise ValueError(f"grid={tuple(grid)} does not divide the {canvas[0]} x {canvas[1]} canvas into whole patches")
    return gh, gw


def _on_pixels(maps: np.ndarray, grid: tuple[int, int], canvas: tuple[int, int]) -> np.ndarray:
    """[..., gh * gw] -> [..., H, W]: every pixel shows the weight of the patch it belongs to."""
    gh, gw = grid
    ph, pw = canvas[0] // gh, canvas[1] // gw
    patches = maps.reshape(*maps.shape[:-1], gh, gw)
    return np.repeat(np.repeat(patches, ph, axis=-2), pw, axis=-1)


def _boxes(boxes: Any, name: str = "boxes") -> np.ndarray:
    boxes = _to_numpy(boxes, name, 2, "k, 4")
    if boxes.shape[1] != 4:
        raise ValueError(f"{name} must be [k, 4] boxes (y0, x0, y1, x1); got shape {tuple(boxes.shape)}")
    return boxes.astype(int)


def _box_shares(maps: np.ndarray, boxes: np.ndarray, grid: tuple[int, int], canvas: tuple[int, int]) -> np.ndarray:
    """[..., s] attention on the patches (rows sum to 1), [k, 4] boxes -> [..., k]: each map's share on each object.

    Each patch counts with the fraction of its pixels inside the box, as `scenes.object_overlap`:
    a patch the box only grazes at a corner adds little, whatever its weight.
    """
    gh, gw = grid
    ph, pw = canvas[0] // gh, canvas[1] // gw
    top, left = np.arange(gh) * ph, np.arange(gw) * pw  # the first pixel row / column of each patch
    masks = [
        np.outer(
            np.clip(np.minimum(top + ph, y1) - np.maximum(top, y0), 0, None) / ph,
            np.clip(np.minimum(left + pw, x1) - np.maximum(left, x0), 0, None) / pw,
        ).ravel()
        for y0, x0, y1, x1 in boxes
    ]
    return maps @ np.stack(masks, axis=-1).astype(float)


def _draw_boxes(ax, boxes: np.ndarray, labels: np.ndarray | None, color: str = "white") -> None:
    from matplotlib.patches import Rectangle

    for i, (y0, x0, y1, x1) in enumerate(boxes):
        # pixel edges sit at half-integers in imshow's coordinates
        ax.add_patch(
            Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1, linestyle="--")
        )
        if labels is not None:
            # above the box when there is room, else just inside it: a label never spills over the panel's edge
            above = y0 >= 3
            ax.text(
                x0 - 0.5,
                y0 - 0.8 if above else y0 - 0.3,
                str(int(labels[i])),
                color=color,
                fontsize=7,
                va="bottom" if above else "top",
                ha="left",
                clip_on=True,
                bbox=dict(facecolor="black", alpha=0.5, linewidth=0, pad=0.5),
            )


def plot_scenes(
    images: Any, boxes: Any = None, labels: Any = None, *, title: str | None = None, fig: Figure | None = None
) -> Figure:
    """A row (or grid) of scenes [k, H, W], each with its objects' boxes and classes when given.

    `boxes` and `labels` are lists with one entry per scene: [m, 4] boxes (y0, x0, y1, x1) and [m] classes.
    """
    first = images[0] if len(images) else None
    images = _to_numpy(images, "images", 4 if first is not None and np.ndim(first) == 3 else 3, "k, H, W")
    k = images.shape[0]
    for name, values in (("boxes", boxes), ("labels", labels)):
        if values is not None and len(values) != k:
            raise ValueError(f"{name} must give one entry per scene ({k}); got {len(values)}")
    fig, axes = _panel_grid(fig, k, 6, (2.1, 2.2), (1.0, 0.6))
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.set_visible(False)
            continue
        shown = ax.imshow(images[i], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        if boxes is not None:
            box = _boxes(boxes[i], f"boxes[{i}]")
            _draw_boxes(
                ax, box, None if labels is None else _to_numpy(labels[i], f"labels[{i}]", 1, "m"), color="yellow"
            )
        ax.set_title(f"scene {i}" + ("" if labels is None else f": {len(labels[i])} objects"), fontsize=9)
        ax.set_xlabel("x (pixels)", fontsize=8)
        ax.set_ylabel("y (pixels)", fontsize=8)
    fig.suptitle(title or f"{k} scenes" + (" (dashed: each object's box, with its class)" if boxes is not None else ""))
    fig.colorbar(shown, ax=axes, label="pixel brightness", shrink=0.8)
    return fig


def plot_latents_on_scene(
    attn: Any,
    image: Any,
    *,
    boxes: Any = None,
    labels: Any = None,
    grid: Any = None,
    row_labels: Any = None,
    latents: Any = None,
    vmax: float | None = None,
    title: str | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Where each latent looks on a scene: attn [l, s] or [r, l, s] over its s patches, one panel per latent.

    With [r, l, s] each row of panels is one map of the latents: a head, a layer, a trained variant
    or another scene, named by `row_labels`. Pass the context part of the attention (keys 0..s-1,
    patches row by row); each row is renormalised to sum to 1 (of what the latent takes from the
    image, where does it look?). `image` [H, W] is outlined in cyan on every panel; `boxes` [k, 4]
    are drawn dashed with their `labels`, and under each panel is the object holding the largest
    share of that latent's attention (each patch weighed by the fraction of its pixels inside the
    box, as `scenes.object_attention`). For one scene per row, pass lists: `image` [r of [H, W]], `boxes`
    and `labels` [r of [k, 4] and [k]]. `latents` picks which latents to show (default all). All
    panels share one colour scale (`vmax` fixes its top, to compare with another figure).
    """
    ndim = attn.ndim if hasattr(attn, "ndim") else np.ndim(attn)
    attn = _to_numpy(attn, "attn", 2 if ndim == 2 else 3, "l, s] or [r, l, s")
    maps = attn[None] if attn.ndim == 2 else attn  # [r, l, s]
    r, l, s = maps.shape
    per_row = isinstance(image, (list, tuple))
    if per_row and len(image) != r:
        raise ValueError(f"image must be one [H, W] canvas, or a list of one per row of attn ({r}); got {len(image)}")
    images = [_canvas(x, f"image[{i}]") for i, x in enumerate(image)] if per_row else [_canvas(image)] * r
    canvas = images[0].shape[:2]
    if any(x.shape[:2] != canvas for x in images):
        raise ValueError(f"the images must all have the same size; got {sorted({x.shape[:2] for x in images})}")
    grid = _scene_grid(s, canvas, grid, "attn")
    if latents is None:
        latents = list(range(l))
    latents = [_check_index(j, l, "latents[...]", "latents") for j in latents]
    if row_labels is not None and len(row_labels) != r:
        raise ValueError(f"row_labels must name each of the {r} rows of attn; got {len(row_labels)}")
    maps = maps[:, latents] / np.maximum(maps[:, latents].sum(-1, keepdims=True), 1e-12)  # [r, L, s]
    pixels = _on_pixels(maps, grid, canvas)  # [r, L, H, W]

    def per_scene(values, name):  # one entry per row, or the same for every row
        if values is None:
            return [None] * r
        if per_row:
            if not isinstance(values, (list, tuple)) or len(values) != r:
                raise ValueError(f"{name} must be a list with one entry per row ({r}) when image is a list")
            return list(values)
        return [values] * r

    boxes_per_row = [None if b is None else _boxes(b, "boxes") for b in per_scene(boxes, "boxes")]
    names_per_row = [
        None if y is None else _to_numpy(y, "labels", 1, "k").astype(int) for y in per_scene(labels, "labels")
    ]
    for b, y in zip(boxes_per_row, names_per_row):
        if b is not None and y is not None and len(y) != len(b):
            raise ValueError(f"labels must give one class per box ({len(b)}); got {len(y)}")
    cols = len(latents)
    fig = _new_figure(fig, (1.75 * cols + 1.5, 1.95 * r + 1.0))
    axes = fig.subplots(r, cols, squeeze=False)
    shared = vmax is not None
    vmax = _check_vmax(vmax) if shared else _vmax(pixels)
    for i in range(r):
        box, names = boxes_per_row[i], names_per_row[i]
        shares = None if box is None or not len(box) else _box_shares(maps[i], box, grid, canvas)  # [L, k]
        ink = images[i] if images[i].ndim == 2 else images[i].mean(-1)
        for c, j in enumerate(latents):
            ax = axes[i, c]
            shown = ax.imshow(pixels[i, c], cmap="inferno", vmin=0.0, vmax=vmax, interpolation="nearest")
            if ink.max() > ink.min():  # the objects' strokes as an outline: the attention stays readable beneath
                ax.contour(ink, levels=[0.5 * (ink.min() + ink.max())], colors="cyan", linewidths=0.6)
            if box is not None:
                _draw_boxes(ax, box, names)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"latent {j}", fontsize=9)
            if c == 0:
                ax.set_ylabel(str(row_labels[i]) if row_labels is not None else "y", fontsize=9)
            if shares is not None:
                best = int(shares[c].argmax())
                what = f"class {names[best]}" if names is not None else f"object {best}"
                ax.set_xlabel(f"{shares[c, best]:.0%} on {what}", fontsize=8)
            elif i == r - 1:
                ax.set_xlabel("x", fontsize=8)
    fig.suptitle(title or "Where each latent looks on the scene (cyan: the strokes; dashed: the objects' boxes)")
    fig.colorbar(
        shown,
        ax=axes,
        label="share of the latent's\nattention on the patch" + (" (shared scale)" if shared else ""),
        shrink=0.9,
    )
    return fig


def plot_coverage(
    best_shares: Any, *, threshold: float = 0.5, title: str | None = None, fig: Figure | None = None
) -> Figure:
    """How well the latents cover the objects: for each object, the largest share of one latent's attention on it.

    `best_shares` is a dict {run name: [k] values in 0..1, one per object}, e.g. at initialisation and
    after training (`scenes.object_attention` measures them). An object is covered when some latent
    puts at least `threshold` of its attention on the object (the dashed line); the legend gives each run's coverage. One histogram
    per run, on the same axes and bins.
    """
    if not isinstance(best_shares, dict) or not best_shares:
        raise TypeError(f"best_shares must be a dict {{name: [k] shares per object}}; got {type(best_shares).__name__}")
    runs = {name: _to_numpy(v, f"best_shares[{name!r}]", 1, "k") for name, v in best_shares.items()}
    fig = _new_figure(fig, (8, 4.2))
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 21)
    styles = ("-", "--", "-.", ":")
    for i, (name, values) in enumerate(runs.items()):
        covered = float((values >= threshold).mean())
        # outlines, not filled bars: several runs stay readable where they overlap; colours from viridis
        # and a line style each, so that the runs stay apart for colour-blind readers and in grey print
        ax.hist(
            values,
            bins=bins,
            histtype="step",
            linewidth=2,
            linestyle=styles[i % len(styles)],
            color=colormaps["viridis"](i / max(len(runs) - 1, 1) * 0.85),
            label=f"{name}: {covered:.0%} of {len(values)} objects covered",
        )
    ax.axvline(
        threshold, color="black", linestyle="--", linewidth=1, label=f"covered: >= {threshold:.0%} on the object"
    )
    ax.set_xlabel("the best latent's share of attention on the object")
    ax.set_ylabel("objects")
    ax.set_xlim(0, 1)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    ax.set_title(title or "Object coverage: does some latent look at each object?")
    return fig
