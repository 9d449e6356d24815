"""viz.py: every figure is labelled, shows the data it was given, marks context | latents, and leaks nothing."""

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import perceiver_edu as pe
from perceiver_edu import scenes, viz
from perceiver_edu.inputs import sample_image

S = 17  # 4 x 4 patches + CLS: small, and valid for the image overlay too


def traced(seed=0, context_length=S, batch=2, **overrides):
    torch.manual_seed(seed)
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny(**overrides))
    context = pe.make_context("structured", batch, context_length, model.config.embed_dim, seed)
    return model(context, return_trace=True)[1]


@pytest.fixture(scope="module")
def trace():
    return traced()


@pytest.fixture(scope="module")
def trace_pair():
    return traced(qk_norm=False), traced(qk_norm=True)


def all_figures(trace, trace_pair):
    """Every public figure, called as the notebooks and the explorer call them."""
    attn = trace.attentions[0]  # [b, h, l, n]
    return {
        "attention_map": viz.plot_attention_map(attn[0, 0], trace.context_length),
        "heads": viz.plot_heads(attn[0], trace.context_length, layer=0),
        "layers": viz.plot_layers(trace, example=1, head=2),
        "context_share": viz.plot_context_share(trace),
        "entropy": viz.plot_entropy(trace),
        "qk_norm": viz.plot_qk_norm_comparison(*trace_pair),
        "image": viz.plot_attention_on_image(attn[0, 0, 3], sample_image(4), context_length=trace.context_length),
    }


def colorbar_labels(fig):
    """The labels of the colour bars attached to anything drawn on the figure."""
    labels = []
    for ax in fig.axes:
        for artist in ax.images + ax.collections:
            bar = getattr(artist, "colorbar", None)
            if bar is not None:
                labels.append(bar.ax.get_ylabel() or bar.ax.get_xlabel())
    return labels


def titles(fig):
    found = [ax.get_title(loc) for ax in fig.axes for loc in ("left", "center", "right")]
    if fig._suptitle is not None:
        found.append(fig._suptitle.get_text())
    return [t for t in found if t]


def dividers(ax):
    """x positions of the vertical lines drawn on an axes (axvline: two equal x values)."""
    xs = []
    for line in ax.lines:
        x = np.asarray(line.get_xdata(), dtype=float)
        if x.size == 2 and x[0] == x[1]:
            xs.append(float(x[0]))
    return xs


def test_every_figure_is_a_labelled_figure_with_a_colour_bar_and_renders(trace, trace_pair):
    for name, fig in all_figures(trace, trace_pair).items():
        assert isinstance(fig, Figure), name
        assert titles(fig), f"{name} has no title"
        data_axes = [ax for ax in fig.axes if ax.get_xlabel() and ax.get_ylabel()]
        assert data_axes, f"{name} has no axes with both axis labels"
        labels = colorbar_labels(fig)
        assert labels and all(labels), f"{name} has no labelled colour bar: {labels}"
        fig.savefig(io.BytesIO(), format="png")  # drawing must not fail (norms, layouts, text)


def test_no_pyplot_figures_are_left_open_after_many_calls(trace, trace_pair):
    plt.close("all")
    for _ in range(3):
        all_figures(trace, trace_pair)
    assert plt.get_fignums() == []


def test_attention_map_shows_the_weights_and_the_divider(trace):
    attn = trace.attentions[0][0, 1]  # [l, n]
    fig = viz.plot_attention_map(attn, trace.context_length, title="my title")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), attn.numpy(), rtol=1e-6)
    assert dividers(ax) == [trace.context_length - 0.5]
    assert ax.get_title() == "my title"
    assert "latent" in ax.get_ylabel() and "key" in ax.get_xlabel()


def test_the_latents_keys_get_a_zoomed_panel_on_the_same_scale(trace):
    s = 257  # as in IDEFICS: without the zoom the 8 latent keys are 3 % of the width
    attn = torch.softmax(torch.randn(8, s + 8, generator=torch.Generator().manual_seed(0)), -1)  # [l, n]
    fig = viz.plot_attention_map(attn, s)
    ax, zoom = fig.axes[0], fig.axes[1]
    np.testing.assert_allclose(zoom.images[0].get_array(), attn[:, s:].numpy(), rtol=1e-6)
    assert zoom.images[0].get_clim() == ax.images[0].get_clim()
    assert "zoomed" in zoom.get_title()

    # the zoom is wider per key than the full map: that is its point
    def width(a, keys):
        return a.get_position().width / keys

    assert width(zoom, 8) > 3 * width(ax, s + 8)
    for fig in (viz.plot_heads(trace.attentions[0][0], S), viz.plot_layers(trace)):
        zooms = [a for a in fig.axes if "zoomed" in a.get_title()]
        assert len(zooms) == len([a for a in fig.axes if dividers(a)])  # one zoom per map


def test_update_attention_map_swaps_the_numbers_of_the_map_and_its_zoom(trace):
    s = trace.context_length
    fig = viz.plot_attention_map(trace.attentions[0][0, 0], s)
    new = trace.attentions[1][0, 3]
    assert viz.update_attention_map(fig, new, title="layer 1, head 3")
    fresh = viz.plot_attention_map(new, s)
    for got, want in zip(fig.axes[:2], fresh.axes[:2]):
        np.testing.assert_allclose(got.images[0].get_array(), want.images[0].get_array())
        assert got.images[0].get_clim() == want.images[0].get_clim()
    assert fig.axes[0].get_title() == "layer 1, head 3"
    # another shape cannot be swapped in: the caller must draw again
    assert not viz.update_attention_map(fig, new[:, :10])
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), new.numpy())


def test_no_divider_when_the_latents_are_not_in_the_keys():
    trace = traced(latents_in_kv=False)
    assert trace.n_keys == trace.context_length
    fig = viz.plot_attention_map(trace.attentions[0][0, 0], trace.context_length)
    assert dividers(fig.axes[0]) == []
    # the context share is then 1 everywhere: the figure says so and still draws
    fig = viz.plot_context_share(trace)
    assert "not in the keys" in fig._suptitle.get_text()
    fig.savefig(io.BytesIO(), format="png")


def test_heads_has_one_map_per_head_each_with_the_divider(trace):
    attn = trace.attentions[1][0]  # [h, l, n]
    fig = viz.plot_heads(attn, trace.context_length, layer=1)
    maps = [ax for ax in fig.axes if ax.images and ax.get_title(loc="left").startswith("head")]
    assert len(maps) == attn.shape[0]
    for i, ax in enumerate(maps):
        np.testing.assert_allclose(ax.images[0].get_array(), attn[i].numpy(), rtol=1e-6)
        assert dividers(ax) == [trace.context_length - 0.5]
    assert "layer 1" in fig._suptitle.get_text()
    # one colour scale for all heads, so colours compare across heads
    assert len({ax.images[0].get_clim() for ax in maps}) == 1


def test_layers_shows_the_chosen_example_and_head_in_every_layer(trace):
    fig = viz.plot_layers(trace, example=1, head=2)
    maps = [ax for ax in fig.axes if ax.images and ax.get_title(loc="left").startswith("layer")]
    assert len(maps) == trace.depth
    for layer, ax in enumerate(maps):
        np.testing.assert_allclose(ax.images[0].get_array(), trace.attentions[layer][1, 2].numpy(), rtol=1e-6)
        assert dividers(ax) == [trace.context_length - 0.5]


def test_context_share_and_entropy_show_the_trace_numbers_and_the_baseline(trace):
    for fig, values, baseline in [
        (viz.plot_context_share(trace, example=1), trace.context_share()[:, 1], trace.uniform_context_share()),
        (viz.plot_entropy(trace, example=1), trace.entropy()[:, 1], trace.max_entropy()),
    ]:
        heatmap = next(ax for ax in fig.axes if ax.images)
        np.testing.assert_allclose(heatmap.images[0].get_array(), values.mean(-1).numpy(), rtol=1e-5)
        strip = next(ax for ax in fig.axes if ax.collections and not ax.images and ax.get_ylabel())
        # every latent of every (layer, head) is a dot
        assert sum(len(c.get_offsets()) for c in strip.collections) == values.numel()
        horizontal = [float(line.get_ydata()[0]) for line in strip.lines if np.ptp(line.get_ydata()) == 0]
        assert baseline == pytest.approx(horizontal[0])


def test_entropy_colours_span_the_data_not_zero_to_log_n(trace):
    values = trace.entropy()[:, 0].mean(-1)  # [depth, h]
    heatmap = next(ax for ax in viz.plot_entropy(trace).axes if ax.images)
    low, high = heatmap.images[0].get_clim()
    per_latent = trace.entropy()[:, 0]
    assert (low, high) == pytest.approx((float(per_latent.min()), float(per_latent.max())))
    assert high < trace.max_entropy()  # on 0..log(n) these heads would all be one colour
    assert values.min() >= low and values.max() <= high


def test_figures_to_compare_share_the_limits_given(trace, trace_pair):
    other = trace_pair[1]
    limits = viz.value_range(trace.entropy(), other.entropy())
    assert limits == (
        pytest.approx(float(torch.cat([trace.entropy().flatten(), other.entropy().flatten()]).min())),
        pytest.approx(float(torch.cat([trace.entropy().flatten(), other.entropy().flatten()]).max())),
    )
    figs = [viz.plot_entropy(t, limits=limits, title=name) for t, name in ((trace, "init"), (other, "trained"))]
    clims = [next(ax for ax in f.axes if ax.images).images[0].get_clim() for f in figs]
    assert clims[0] == clims[1] == pytest.approx(limits)
    strips = [next(ax for ax in f.axes if ax.collections and not ax.images and ax.get_ylabel()) for f in figs]
    assert strips[0].get_ylim() == strips[1].get_ylim()
    assert figs[0]._suptitle.get_text().startswith("init")
    share_limits = viz.value_range(trace.context_share(), other.context_share())
    a, b = (viz.plot_context_share(t, limits=share_limits) for t in (trace, other))
    strips = [next(ax for ax in f.axes if ax.collections and not ax.images and ax.get_ylabel()) for f in (a, b)]
    assert strips[0].get_ylim() == strips[1].get_ylim()


def test_overlays_share_a_colour_scale_when_given_one(trace):
    attn = trace.attentions[0][0, 0]
    vmax = float(attn[:, 1:S].max())
    figs = [viz.plot_attention_on_image(attn[i], sample_image(4), context_length=S, vmax=vmax) for i in (0, 5)]
    for fig in figs:
        overlay = next(ax for ax in fig.axes if len(ax.images) == 2).images[1]
        assert overlay.get_clim() == (0.0, vmax)
    assert "shared" in colorbar_labels(figs[0])[0]
    assert "own scale" in colorbar_labels(viz.plot_attention_on_image(attn[0], None, context_length=S))[0]


def test_one_dpi_for_every_figure(trace, trace_pair):
    assert viz.DPI >= 100
    for name, fig in all_figures(trace, trace_pair).items():
        assert fig.dpi == viz.DPI, name


def test_qk_norm_comparison_puts_off_and_on_side_by_side(trace_pair):
    off, on = trace_pair
    fig = viz.plot_qk_norm_comparison(off, on)
    panels = {ax.get_title(): ax.images[0].get_array() for ax in fig.axes if ax.images}
    np.testing.assert_allclose(panels["QK-norm off: entropy"], off.entropy()[:, 0].mean(-1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(panels["QK-norm on: entropy"], on.entropy()[:, 0].mean(-1).numpy(), rtol=1e-5)
    scores_on = torch.stack(on.scores)[:, 0]  # [depth, h, l, n]
    expected = scores_on.amax((-1, -2)) - scores_on.amin((-1, -2))
    np.testing.assert_allclose(panels["QK-norm on: score range"], expected.numpy(), rtol=1e-5)
    assert len(colorbar_labels(fig)) == 2  # one shared scale per row, so off and on compare by colour


def test_image_overlay_puts_each_patch_weight_on_its_grid_cell(trace):
    row = trace.attentions[0][0, 0, 5]  # [n]
    s = trace.context_length  # 17 = 4 x 4 + 1
    image = sample_image(4)
    fig = viz.plot_attention_on_image(row, image, context_length=s)
    ax = next(ax for ax in fig.axes if len(ax.images) == 2)
    np.testing.assert_allclose(ax.images[0].get_array(), image, rtol=1e-6)  # the photo underneath
    np.testing.assert_allclose(ax.images[1].get_array(), row[1:s].reshape(4, 4).numpy(), rtol=1e-6)
    bars = next(ax for ax in fig.axes if ax.patches)
    heights = [p.get_height() for p in bars.patches]
    np.testing.assert_allclose(heights, np.concatenate([row[:1], row[s:]]), rtol=1e-6)  # CLS, then the latents
    assert dividers(bars) == [0.5]
    # without a photo the grid is drawn alone
    fig = viz.plot_attention_on_image(row, None, context_length=s)
    assert len(fig.axes[0].images) == 1


def test_fig_is_cleared_and_reused(trace, trace_pair):
    fig = viz.plot_heads(trace.attentions[0][0], trace.context_length)
    again = viz.plot_attention_map(trace.attentions[0][0, 0], trace.context_length, fig=fig)
    assert again is fig
    fresh = viz.plot_attention_map(trace.attentions[0][0, 0], trace.context_length)
    assert len(fig.axes) == len(fresh.axes)  # the heads grid is gone, not drawn under the new map
    for call in (
        lambda f: viz.plot_layers(trace, fig=f),
        lambda f: viz.plot_context_share(trace, fig=f),
        lambda f: viz.plot_entropy(trace, fig=f),
        lambda f: viz.plot_qk_norm_comparison(*trace_pair, fig=f),
        lambda f: viz.plot_attention_on_image(trace.attentions[0][0, 0, 0], None, context_length=S, fig=f),
        lambda f: viz.plot_heads(trace.attentions[0][0], S, fig=f),
    ):
        assert call(fig) is fig
        assert len(fig.axes) == len(call(None).axes)
    assert plt.get_fignums() == []


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda t: viz.plot_attention_map(t.attentions[0][0], S),
            ValueError,
            r"attn must be 2-D \[l, n\]; got shape \(4, 8, 25\)",
        ),
        (
            lambda t: viz.plot_attention_map(t.attentions[0][0, 0], 99),
            ValueError,
            r"context_length must be between 1 and .* n = 25 .* got 99",
        ),
        (
            lambda t: viz.plot_attention_map("attention", S),
            TypeError,
            r"attn must be a torch.Tensor or numpy array .* got str",
        ),
        (lambda t: viz.plot_heads(t.attentions[0][0, 0], S), ValueError, r"attn must be 3-D \[h, l, n\]"),
        (lambda t: viz.plot_layers(t, head=4), ValueError, r"head must be between 0 and 3 \(4 heads\); got 4"),
        (lambda t: viz.plot_layers(t, example=2), ValueError, r"example must be between 0 and 1"),
        (
            lambda t: viz.plot_context_share(t.attentions),
            TypeError,
            r"trace must be the Trace from model\(context, return_trace=True\); got tuple",
        ),
        (
            lambda t: viz.plot_qk_norm_comparison(t, traced(context_length=10)),
            ValueError,
            r"same architecture and input",
        ),
        (
            lambda t: viz.plot_attention_on_image(t.attentions[0][0, 0, 0][:20], None, context_length=18),
            ValueError,
            r"square number of patches plus one CLS .* got 18",
        ),
        (
            lambda t: viz.plot_attention_on_image(t.attentions[0][0, 0, 0], np.zeros((4, 4)), context_length=S),
            ValueError,
            r"image must be 3-D \[H, W, 3\]",
        ),
        (
            lambda t: viz.plot_attention_map(t.attentions[0][0, 0], S, fig="figure"),
            TypeError,
            r"fig must be a matplotlib.figure.Figure or None; got str",
        ),
    ],
)
def test_bad_input_gets_a_message_naming_the_argument(trace, call, error, message):
    with pytest.raises(error, match=message):
        call(trace)
    assert plt.get_fignums() == []


# -- scenes ----------------------------------------------------------------------------------------

CANVAS, GRID = 16, 4  # a 16 x 16 canvas in 4 x 4 patches of 4 pixels


@pytest.fixture(scope="module")
def scene():
    image = np.zeros((CANVAS, CANVAS))
    image[1:7, 2:8] = 1.0  # object 0 (class 3) in patches (0, 0), (0, 1), (1, 0), (1, 1)
    image[9:15, 9:15] = 1.0  # object 1 (class 7) in patches (2, 2), (2, 3), (3, 2), (3, 3)
    boxes = torch.tensor([[0, 0, 8, 8], [8, 8, 16, 16]])
    labels = torch.tensor([3, 7])
    attn = torch.full((2, 3, GRID * GRID), 0.01)  # [r, l, s]
    attn[:, 0, [0, 1, 4, 5]] = 1.0  # latent 0 looks at object 0
    attn[:, 1, [10, 11, 14, 15]] = 1.0  # latent 1 at object 1
    return image, boxes, labels, attn  # latent 2 looks everywhere alike


def test_latents_on_scene_draw_each_latents_map_on_the_canvas_and_name_its_object(scene):
    image, boxes, labels, attn = scene
    fig = viz.plot_latents_on_scene(attn, image, boxes=boxes, labels=labels, row_labels=["head 0", "head 1"])
    panels = [ax for ax in fig.axes if ax.images and ax.get_xlabel()]
    assert len(panels) == 2 * 3
    first = panels[0].images[0].get_array()  # latent 0, row 0: the patch weights spread over their pixels
    expected = (attn[0, 0] / attn[0, 0].sum()).reshape(GRID, GRID).repeat_interleave(4, 0).repeat_interleave(4, 1)
    np.testing.assert_allclose(first, expected.numpy(), rtol=1e-6)
    share = float(attn[0, 0, [0, 1, 4, 5]].sum() / attn[0, 0].sum())
    assert panels[0].get_xlabel() == f"{share:.0%} on class 3"
    assert panels[1].get_xlabel().endswith("on class 7")
    assert len(panels[0].patches) == 2  # both boxes, dashed
    assert [ax.get_ylabel() for ax in panels[::3]] == ["head 0", "head 1"]
    assert len({ax.images[0].get_clim() for ax in panels}) == 1  # one colour scale
    assert titles(fig) and colorbar_labels(fig)
    # a subset of the latents, a fixed scale
    fig = viz.plot_latents_on_scene(attn[0], image, latents=[1], vmax=0.5)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 1 and shown[0].get_title() == "latent 1" and shown[0].images[0].get_clim() == (0.0, 0.5)
    assert "shared" in colorbar_labels(fig)[0]


def test_latents_on_scene_captions_weigh_each_patch_by_its_pixels_in_the_box(scene):
    image, _, labels, attn = scene
    # a box that only grazes latent 0's patches (one pixel row of patches 4 and 5): the caption says little is on it
    boxes = torch.tensor([[7, 0, 15, 8], [8, 8, 16, 16]])
    fig = viz.plot_latents_on_scene(attn[0], image, boxes=boxes, labels=labels)
    panels = [ax for ax in fig.axes if ax.images and ax.get_xlabel()]
    weights = attn[0, 0] / attn[0, 0].sum()
    assert panels[0].get_xlabel() == f"{float(weights[[4, 5]].sum() / 4 + weights[[8, 9]].sum()):.0%} on class 3"
    # the same shares as the package's metric, scenes.object_attention
    maps = attn[0] / attn[0].sum(-1, keepdim=True)  # [l, s]
    (expected,) = scenes.object_attention(maps[None], [boxes], (CANVAS, CANVAS), 4)
    np.testing.assert_allclose(
        viz._box_shares(
            attn[0].numpy() / attn[0].sum(-1, keepdim=True).numpy(), boxes.numpy(), (GRID, GRID), (CANVAS, CANVAS)
        ),
        expected.numpy(),
        rtol=1e-6,
    )


def test_latents_on_scene_can_show_one_scene_per_row(scene):
    image, boxes, labels, attn = scene
    flipped = image[::-1, ::-1].copy()
    flipped_boxes = CANVAS - boxes[:, [2, 3, 0, 1]]  # the same objects, turned half a circle
    fig = viz.plot_latents_on_scene(
        attn, [image, flipped], boxes=[boxes, flipped_boxes], labels=[labels, labels], row_labels=["scene 0", "scene 1"]
    )
    panels = [ax for ax in fig.axes if ax.images and ax.get_xlabel()]
    # latent 0 looks at the top-left patches: object 0 (class 3) in scene 0, object 1 (class 7) turned into that corner
    assert panels[0].get_xlabel().endswith("on class 3") and panels[3].get_xlabel().endswith("on class 7")
    with pytest.raises(ValueError, match=r"boxes must be a list with one entry per row \(2\)"):
        viz.plot_latents_on_scene(attn, [image, flipped], boxes=boxes)
    with pytest.raises(
        ValueError, match=r"image must be one \[H, W\] canvas, or a list of one per row of attn \(2\); got 3"
    ):
        viz.plot_latents_on_scene(attn, [image] * 3)


def test_class_labels_stay_inside_their_panel(scene):
    # object 0's box touches the canvas' top edge: its label goes inside the box, not over the panel's edge
    image, boxes, labels, attn = scene
    fig = viz.plot_latents_on_scene(attn[0], image, boxes=boxes, labels=labels)
    fig.canvas.draw()
    for ax in (ax for ax in fig.axes if ax.images):
        panel = ax.get_window_extent()
        for text in ax.texts:
            box = text.get_window_extent()
            assert panel.y0 - 0.5 <= box.y0 and box.y1 <= panel.y1 + 0.5, (
                f"label {text.get_text()} spills over its panel"
            )


def test_scenes_and_coverage_figures_show_their_data(scene):
    image, boxes, labels, _ = scene
    fig = viz.plot_scenes(
        torch.tensor(np.stack([image, image[::-1]]), dtype=torch.float32), [boxes, boxes[:1]], [labels, labels[:1]]
    )
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 2 and len(shown[1].patches) == 1
    assert shown[0].get_title() == "scene 0: 2 objects"
    before, after = torch.tensor([0.1, 0.2, 0.6]), torch.tensor([0.9, 0.8, 0.4])
    fig = viz.plot_coverage({"at initialisation": before, "trained": after}, threshold=0.5)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "at initialisation: 33% of 3 objects covered" in legend and "trained: 67% of 3 objects covered" in legend
    outlines = fig.axes[0].patches
    assert len(outlines) == 2  # one outline per run

    def area(polygon):  # shoelace: the area under a histogram's outline is objects x bin width
        x, y = polygon.get_xy().T
        return abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2

    assert [area(p) for p in outlines] == pytest.approx([3 * 0.05, 3 * 0.05])  # every object counted once
    fig.savefig(io.BytesIO(), format="png")


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda a, i, b: viz.plot_latents_on_scene(a[0, :, :15], i),
            r"15 weights per row, which do not tile the 16 x 16 canvas",
        ),
        (
            lambda a, i, b: viz.plot_latents_on_scene(a, i, row_labels=["one"]),
            r"row_labels must name each of the 2 rows",
        ),
        (lambda a, i, b: viz.plot_latents_on_scene(a, i, latents=[3]), r"latents\[...\] must be between 0 and 2"),
        (lambda a, i, b: viz.plot_latents_on_scene(a, i, boxes=b[:, :3]), r"boxes must be \[k, 4\] boxes"),
        (
            lambda a, i, b: viz.plot_latents_on_scene(a, i[:, :15], grid=(4, 4)),
            r"grid=\(4, 4\) does not divide the 16 x 15 canvas",
        ),
        (lambda a, i, b: viz.plot_latents_on_scene(a, i, vmax=0), r"vmax must be a positive number"),
        (lambda a, i, b: viz.plot_coverage([0.1, 0.2]), r"best_shares must be a dict"),
        (lambda a, i, b: viz.plot_entropy(traced(), limits=(1.0, 1.0)), r"limits must have low < high"),
    ],
)
def test_bad_scene_input_gets_a_message_naming_the_argument(scene, call, message):
    image, boxes, _, attn = scene
    with pytest.raises((ValueError, TypeError), match=message):
        call(attn, image, boxes)
    assert plt.get_fignums() == []
