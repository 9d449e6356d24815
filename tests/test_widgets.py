"""The explorer driven from Python, as a learner drives it with the mouse: set a control, check what changed.

Each test counts forward passes (`n_runs`) and figure draws (`n_renders`) and compares the PNG on
screen, so a change that should re-run the model, redraw only, or leave the view alone is told apart.
Most tests drive the PNG path (`live=False`, kept for `viz`'s figures and as the benchmark's
reference); the tests at the end drive the live explorer, whose view the browser draws (view.js):
what it is sent must be the trace, and a view change must send no tensors and draw no PNG.
"""

from __future__ import annotations

import gc
import io
import random
import resource

import matplotlib.pyplot as plt
import numpy as np
import PIL.Image
import pytest
import torch
from matplotlib.figure import Figure

import perceiver_edu as pe
from perceiver_edu import viz
from perceiver_edu.explorer import forward, render

NAMES = (
    "n_heads",
    "head_dim",
    "depth",
    "n_latents",
    "context_length",
    "qk_norm",
    "latents_in_kv",
    "input_kind",
    "seed",
    "device",
    "layer",
    "head",
)
NEW_NAMES = ("weights", "scene")  # issue 9: trained weights and the held-out scene they read


@pytest.fixture
def explorer():
    """Random weights on the photo: the explorer of the architecture lessons (seeded, no training)."""
    return pe.Explorer(live=False, weights="random")


@pytest.fixture
def trained():
    """The explorer as a learner first meets it: the trained scenes model on held-out scene 0."""
    return pe.Explorer(live=False)


def png_pixels(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the view does not hold a PNG"
    return np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB"))


def shown_map(explorer) -> np.ndarray:
    """The numbers the 'chosen head' figure shows, read back from its image artist."""
    return np.asarray(explorer.figures["head"].axes[0].images[0].get_array())


# -- what is there --------------------------------------------------------------------------------


def test_controls_by_name_and_defaults(explorer):
    assert set(NAMES) <= set(explorer.controls) and set(NEW_NAMES) <= set(explorer.controls)
    c = explorer.controls
    assert c["weights"].value == "random"
    assert (c["n_heads"].value, c["head_dim"].value, c["depth"].value, c["n_latents"].value) == (4, 16, 2, 8)
    assert c["context_length"].value == 257 and c["input_kind"].value == "image"
    # a drag must not re-run the model on every pixel
    for name in ("n_heads", "head_dim", "depth", "n_latents", "context_length", "layer", "head"):
        assert c[name].continuous_update is False, name
    assert list(c["device"].options) == pe.available_devices()
    assert c["device"].value == pe.pick_device()
    assert list(c["input_kind"].options) == [*pe.INPUT_KINDS, "scene"]
    assert list(c["weights"].options) == ["random"] + [n for n in pe.PRETRAINED if n.startswith("scenes")]


def test_first_view_and_status(explorer):
    assert explorer.n_runs == 1 and explorer.message == ""
    trace = explorer.trace
    assert trace.depth == 2 and tuple(trace.attentions[0].shape) == (1, 4, 8, 257 + 8)
    png_pixels(explorer.views["head"].value)
    np.testing.assert_allclose(shown_map(explorer), trace.attentions[0][0, 0].numpy(), rtol=0, atol=0)
    status = explorer.status.value
    for part in (
        "[1, 8, 64]",
        f"{explorer.run.n_params:,} parameters",
        "device cpu",
        "forward",
        " ms",
        "random weights, seed 0",
    ):
        assert part in status, part
    assert explorer.run.n_params == sum(p.numel() for p in pe.PerceiverResampler(explorer.run.config).parameters())


def test_displaying_shows_the_whole_ui(explorer):
    bundle = explorer._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.ui.model_id
    text = bundle["text/plain"]
    assert text.startswith("Explorer(depth 2, 4 heads of 16") and "0x" not in text and len(text) < 300

    # every control and the tabbed views are inside the displayed box
    def walk(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from walk(child)

    inside = {id(x) for x in walk(explorer.ui)}
    assert all(id(c) in inside for c in explorer.controls.values())
    assert all(id(v) in inside for v in explorer.views.values())
    assert id(explorer.status) in inside and id(explorer.problem) in inside


# -- view changes redraw from the stored trace ----------------------------------------------------


@pytest.mark.parametrize("name, value", [("head", 2), ("layer", 1)])
def test_view_change_redraws_without_running(explorer, name, value):
    before_png, runs, renders, trace = explorer.views["head"].value, explorer.n_runs, explorer.n_renders, explorer.trace
    explorer.controls[name].value = value
    assert explorer.n_runs == runs and explorer.trace is trace
    assert explorer.n_renders == renders + 1
    assert explorer.views["head"].value != before_png
    layer, head = explorer.controls["layer"].value, explorer.controls["head"].value
    np.testing.assert_array_equal(shown_map(explorer), trace.attentions[layer][0, head].numpy())
    assert f"layer {layer}, head {head}" in explorer.figures["head"].axes[0].get_title()


def test_in_place_redraw_matches_a_fresh_viz_figure(explorer):
    """The fast path (new numbers into the same axes) draws what viz would draw from scratch."""
    explorer.controls["head"].value = 3
    # a notebook showing the figure saves it at its own dpi in between; the next redraw must not mind
    explorer.figures["head"].savefig(io.BytesIO(), format="png", dpi=100, bbox_inches="tight")
    explorer.controls["layer"].value = 1
    fast = png_pixels(explorer.views["head"].value)
    trace = explorer.trace
    fresh = Figure(figsize=explorer.figures["head"].get_size_inches(), dpi=render.DPI, layout="constrained")
    viz.plot_attention_map(
        trace.attentions[1][0, 3], trace.context_length, fig=fresh, title=explorer.figures["head"].axes[0].get_title()
    )
    full = png_pixels(render.figure_png(fresh))
    assert fast.shape == full.shape
    differ = np.abs(fast.astype(int) - full.astype(int)).max(axis=-1) > 40
    assert differ.mean() < 0.02, f"{differ.mean():.1%} of the pixels differ from a fresh viz figure"
    # and the figure itself, drawn whole (as a notebook displays it), is the same picture
    whole = png_pixels(render.figure_png(explorer.figures["head"]))
    assert (np.abs(whole.astype(int) - fast.astype(int)).max(axis=-1) > 40).mean() < 0.005
    image = explorer.figures["head"].axes[0].images[0]
    assert image.get_clim() == (0.0, pytest.approx(float(trace.attentions[1][0, 3].max())))


def test_a_layout_seen_before_is_blitted_into_its_kept_figure(explorer):
    """8 -> 16 -> 8 latents: the second 8 reuses the figure laid out for 8, with the new run's numbers."""
    explorer.controls["n_latents"].value = 8
    eight = explorer.figures["head"]
    explorer.controls["n_latents"].value = 16
    assert explorer.figures["head"] is not eight and shown_map(explorer).shape[0] == 16
    explorer.controls["seed"].value = explorer.controls["seed"].value + 1  # other numbers, same shapes as before
    explorer.controls["n_latents"].value = 8
    assert explorer.figures["head"] is eight
    trace = explorer.trace
    np.testing.assert_array_equal(shown_map(explorer), trace.attentions[0][0, 0].numpy())
    fresh = Figure(figsize=eight.get_size_inches(), dpi=render.DPI, layout="constrained")
    viz.plot_attention_map(trace.attentions[0][0, 0], trace.context_length, fig=fresh, title=eight.axes[0].get_title())
    blitted, full = png_pixels(explorer.views["head"].value), png_pixels(render.figure_png(fresh))
    assert blitted.shape == full.shape
    assert (np.abs(blitted.astype(int) - full.astype(int)).max(axis=-1) > 40).mean() < 0.02


def test_other_tabs_draw_when_opened_and_only_then(explorer):
    renders = explorer.n_renders
    explorer.controls["seed"].value = 5  # a rebuild draws the visible tab only
    assert explorer.n_renders == renders + 1 and explorer.views["share"].value == b""
    for view in ("heads", "share", "entropy", "image"):
        before = explorer.n_renders
        explorer.show(view)
        assert explorer.n_renders == before + 1, view
        png_pixels(explorer.views[view].value)
        explorer.show(view)  # already up to date: nothing to draw
        assert explorer.n_renders == before + 1
    explorer.show("share")
    before = explorer.n_renders
    explorer.controls["head"].value = 1  # the share view does not depend on the head
    assert explorer.n_renders == before
    explorer.controls["qk_norm"].value = True
    assert explorer.n_renders == before + 1  # the visible share view follows the new run


def test_image_view_without_image_input_says_so(explorer):
    explorer.set(input_kind="random", context_length=100)
    explorer.show("image")
    texts = [t.get_text() for t in explorer.figures["image"].axes[0].texts]
    assert any("Choose input 'scene' or 'image'" in t for t in texts)


def test_image_view_draws_one_latent_over_the_photo(explorer):
    explorer.set(layer=1, head=2, latent=3)
    explorer.show("image")
    fig = explorer.figures["image"]
    top = fig.axes[0]
    assert "layer 1, head 2, latent 3 on the photo" in top.get_title()
    row = explorer.trace.attentions[1][0, 2, 3]  # [n]: CLS, 256 patches, 8 latents
    np.testing.assert_allclose(top.images[-1].get_array(), row[1:257].reshape(16, 16).numpy(), atol=1e-6)
    width, height = fig.get_size_inches() * fig.dpi
    assert min(width, height) >= 600, "the photo view must be large enough to read its labels"


# -- architecture changes rebuild and run once ----------------------------------------------------


@pytest.mark.parametrize(
    "name, value, check",
    [
        ("n_heads", 2, lambda t, r: t.attentions[0].shape[1] == 2),
        ("head_dim", 8, lambda t, r: r.config.head_dim == 8),
        ("depth", 3, lambda t, r: t.depth == 3),
        ("n_latents", 5, lambda t, r: t.attentions[0].shape[2] == 5 and tuple(r.output.shape) == (1, 5, 64)),
        ("context_length", 145, lambda t, r: t.context_length == 145 and t.n_keys == 145 + 8),
        ("qk_norm", True, lambda t, r: r.config.qk_norm),
        ("latents_in_kv", False, lambda t, r: t.n_keys == 257),
        ("input_kind", "structured", lambda t, r: r.input_kind == "structured"),
        ("seed", 7, lambda t, r: r.seed == 7),
    ],
)
def test_architecture_change_runs_once(explorer, name, value, check):
    runs, old = explorer.n_runs, explorer.trace
    explorer.controls[name].value = value
    assert explorer.n_runs == runs + 1, f"{name} should rebuild and run exactly once"
    assert explorer.message == ""
    assert check(explorer.trace, explorer.run)
    if name in ("seed", "qk_norm", "head_dim", "input_kind"):  # same shapes, other numbers
        assert not torch.equal(explorer.trace.attentions[0], old.attentions[0])
    layer, head = explorer.controls["layer"].value, explorer.controls["head"].value
    np.testing.assert_array_equal(shown_map(explorer), explorer.trace.attentions[layer][0, head].numpy())


def test_shrinking_clamps_the_view_controls_without_a_second_run(explorer):
    explorer.set(layer=1, head=3)
    runs, renders = explorer.n_runs, explorer.n_renders
    explorer.controls["depth"].value = 1
    explorer.controls["n_heads"].value = 2
    assert explorer.n_runs == runs + 2 and explorer.n_renders == renders + 2
    assert explorer.controls["layer"].value == 0 and explorer.controls["layer"].max == 0
    assert explorer.controls["head"].value == 1 and explorer.controls["head"].max == 1
    np.testing.assert_array_equal(shown_map(explorer), explorer.trace.attentions[0][0, 1].numpy())


def test_set_changes_several_controls_with_one_run(explorer):
    runs = explorer.n_runs
    explorer.set(depth=6, qk_norm=True, n_heads=8, layer=5)
    assert explorer.n_runs == runs + 1
    assert explorer.trace.depth == 6 and explorer.run.config.qk_norm and explorer.controls["layer"].value == 5
    with pytest.raises(TypeError, match="no control"):
        explorer.set(heads=3)


def test_settings_at_construction_and_out_of_range_values():
    explorer = pe.Explorer(live=False, depth=6, layer=5, head=3, qk_norm=True)
    assert explorer.n_runs == 1 and explorer.trace.depth == 6 and explorer.controls["layer"].value == 5
    np.testing.assert_array_equal(shown_map(explorer), explorer.trace.attentions[5][0, 3].numpy())
    # a slider would clamp 100 to 16 without a word; set() says what the range is
    with pytest.raises(ValueError, match=r"n_heads must be between 1 and 16.*got 100"):
        explorer.set(n_heads=100)
    with pytest.raises(ValueError, match=r"layer must be between 0 and 5 \(the model's depth\); got 6"):
        explorer.set(layer=6)
    with pytest.raises(ValueError, match="input_kind must be one of"):
        explorer.set(input_kind="video")
    with pytest.raises(TypeError, match="qk_norm must be True or False"):
        explorer.set(qk_norm="yes")
    assert explorer.n_runs == 1 and explorer.run.config.n_heads == 4


def test_seeded_weights_leave_the_learners_rng_alone():
    state = torch.get_rng_state()
    a, b = pe.Explorer(live=False, weights="random", seed=3), pe.Explorer(live=False, weights="random", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.run.output, b.run.output)


# -- what cannot run gets a message and keeps the view ---------------------------------------------


def assert_kept(explorer, png, runs, trace):
    assert explorer.views["head"].value == png and explorer.n_runs == runs and explorer.trace is trace
    assert "Cannot show this setting" in explorer.problem.value and "Still showing" in explorer.problem.value


def test_image_input_needs_a_square_grid_plus_cls(explorer):
    png, runs, trace = explorer.views["head"].value, explorer.n_runs, explorer.trace
    explorer.controls["context_length"].value = 100
    assert "context_length" in explorer.message and "g*g + 1" in explorer.message and "100" in explorer.message
    assert_kept(explorer, png, runs, trace)
    explorer.controls["input_kind"].value = "random"  # the same length is fine for random tokens
    assert explorer.n_runs == runs + 1 and explorer.message == "" and explorer.problem.value == ""
    assert explorer.trace.context_length == 100


def test_memory_budget_refuses_with_a_message():
    explorer = pe.Explorer(live=False, weights="random", memory_budget_mb=2)
    png, runs, trace = explorer.views["head"].value, explorer.n_runs, explorer.trace
    explorer.controls["n_latents"].value = 128
    assert "budget of 2 MB" in explorer.message and "memory_budget_mb" in explorer.message
    assert_kept(explorer, png, runs, trace)
    # the view controls still redraw the kept trace
    explorer.controls["head"].value = 1
    np.testing.assert_array_equal(shown_map(explorer), trace.attentions[0][0, 1].numpy())


def test_estimate_grows_with_the_maps():
    cfg = pe.ResamplerConfig(embed_dim=64)
    small = forward.estimate_bytes(cfg, 257)
    assert small < forward.MEMORY_BUDGET_MB * 2**20
    deeper = [forward.estimate_bytes(cfg.replace(depth=d), 257) for d in (2, 4, 6)]
    assert deeper[0] == small and deeper[2] - deeper[1] == deeper[1] - deeper[0] > 0  # linear in depth
    maps = 4 * 4 * 4 * 8 * (257 + 8)  # 4 bytes x (attn, scores, two stacked copies) x 4 heads x [l, n], per layer
    assert deeper[1] - deeper[0] >= 2 * maps
    assert forward.estimate_bytes(pe.ResamplerConfig.idefics(), 257) > small * 50


def test_device_failure_shows_a_message(explorer, monkeypatch):
    png, runs, trace = explorer.views["head"].value, explorer.n_runs, explorer.trace

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(forward, "run_forward", broken)
    explorer.controls["seed"].value = 1
    assert "forward pass failed on cpu" in explorer.message and "out of memory" in explorer.message
    assert_kept(explorer, png, runs, trace)
    monkeypatch.undo()
    explorer.controls["seed"].value = 2
    assert explorer.n_runs == runs + 1 and explorer.message == ""


def test_an_unexpected_error_in_a_figure_is_a_message_not_a_traceback(explorer, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(viz, "plot_heads", broken)
    explorer.show("heads")  # must not raise
    assert "KeyError" in explorer.message and "boom" in explorer.message
    assert "Traceback" not in explorer.problem.value


def test_unknown_settings_are_named():
    with pytest.raises(TypeError, match="heads"):
        pe.Explorer(live=False, heads=3)
    with pytest.raises(ValueError, match="device must be one of the devices available here"):
        pe.Explorer(live=False, device="tpu")
    with pytest.raises(ValueError, match="view must be one of"):
        pe.Explorer(live=False).show("map")


def test_few_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    with forward._few_threads(pe.ResamplerConfig(), 257, "cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


# -- 200 random changes in a row --------------------------------------------------------------------


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def random_value(rng: random.Random, explorer, name):
    c = explorer.controls[name]
    if name == "context_length":  # valid and invalid image lengths, and the sizes learners pick
        return rng.choice([1, 2, 10, 50, 64, 65, 100, 145, 257])
    if name in ("n_latents",):
        return rng.choice([1, 4, 8, 16, 64, 128])  # 128 with a small budget is refused
    if name in ("qk_norm", "latents_in_kv"):
        return not c.value
    if name in ("input_kind", "device", "weights"):
        return rng.choice(list(c.options))
    if name == "scene":
        return rng.randrange(0, 100)
    if name == "seed":
        return rng.randrange(0, 1000)
    if name == "depth":
        return rng.randint(1, 6)
    return rng.randint(c.min, c.max)


@pytest.mark.slow
def test_200_random_changes_raise_nothing_and_leak_nothing():
    rng = random.Random(0)
    explorer = pe.Explorer(live=False, memory_budget_mb=8)
    names = list(NAMES) + list(NEW_NAMES) + ["latent", "tab", "tab"]

    def change():
        name = rng.choice(names)
        if name == "tab":
            explorer.show(rng.choice(["head", "heads", "share", "entropy", "image"]))
        else:
            explorer.controls[name].value = random_value(rng, explorer, name)

    for _ in range(40):  # warm up: caches, fonts, the allocator's pools
        change()
    gc.collect()
    rss_before = rss_kb()
    figures_before = sum(type(x) is Figure for x in gc.get_objects())
    messages = 0
    for _ in range(200):
        change()  # no exception may escape
        messages += explorer.message != ""
    gc.collect()
    assert plt.get_fignums() == []
    # a view with a fast path keeps one laid-out figure per layout it saw, at most `keep` of them
    # (render.Painter); the warm-up may not have filled those caches yet, but 200 changes that each
    # leaked a figure would exceed that bound many times over
    kept = sum(p.keep for p in explorer._painters.values() if p.view.fast is not None)
    assert all(len(p._laid_out) <= p.keep for p in explorer._painters.values())
    assert figures_before <= sum(type(x) is Figure for x in gc.get_objects()) <= figures_before + kept
    growth_mb = (rss_kb() - rss_before) / 1024
    assert growth_mb < 60, f"memory grew by {growth_mb:.0f} MB over 200 changes"
    assert messages > 0, "the sequence should have met refused settings (image lengths, the budget)"

    # the view is still valid: it shows the stored trace at the chosen layer and head, and works on
    run, c = explorer.run, explorer.controls
    assert c["layer"].max == run.config.depth - 1 and c["head"].max == run.config.n_heads - 1
    explorer.show("head")
    explorer.set(head=0, layer=0)
    np.testing.assert_array_equal(shown_map(explorer), run.trace.attentions[0][0, 0].numpy())
    explorer.set(input_kind="structured", context_length=50, n_latents=4, depth=2, n_heads=2)
    assert explorer.message == "" and explorer.trace.attentions[0].shape == (1, 2, 4, 54)
    png_pixels(explorer.views["head"].value)
    explorer.set(weights="scenes")  # and the trained model comes back whole
    assert explorer.message == "" and explorer.run.weights == "scenes" and explorer.trace.context_length == 64


def test_random_context_is_not_the_latents_themselves():
    """One seed sets both the weights and the context; they must not come from the same random numbers."""
    config = pe.ResamplerConfig(embed_dim=64, n_latents=8)
    run = forward.run_forward(config, input_kind="random", context_length=20, seed=0)
    attn = run.trace.attentions[0][0, 0]  # [l, n]: keys 0..19 context, 20..27 latents
    for i in range(8):
        assert not torch.allclose(attn[:, i], attn[:, 20 + i]), f"context token {i} has the key of latent {i}"


# -- the package's parts ----------------------------------------------------------------------------


def test_the_forward_pass_imports_without_the_widget_toolkit():
    """benchmarks/gpu_check.py runs the explorer's forward pass on machines without ipywidgets."""
    import subprocess
    import sys

    code = (
        "import sys; import perceiver_edu.explorer.forward as f; "
        "print(sorted(m for m in ('ipywidgets', 'matplotlib', 'PIL') if m in sys.modules)); "
        "print(callable(f.run_forward))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "True"], out


def test_a_new_view_is_one_registry_entry(monkeypatch):
    """One View in views.VIEWS gives a tab, a Figure and an Image, drawn when opened, redrawn on its controls."""
    from perceiver_edu.explorer import views

    drawn = []

    def draw_latent_norms(fig, run, pick):
        drawn.append(pick.layer)
        ax = fig.add_subplot()
        ax.bar(range(run.config.n_latents), run.trace.latents[pick.layer][0].norm(dim=-1).numpy())
        ax.set(title=f"latent norms after layer {pick.layer}", xlabel="latent l", ylabel="norm")

    entry = views.View("norms", "latent norms", (4, 3), ("layer",), draw_latent_norms)
    monkeypatch.setattr(views, "VIEWS", views.VIEWS + (entry,))
    explorer = pe.Explorer(live=False, weights="random")  # opens on layer 0
    assert "norms" in explorer.views and "norms" in explorer.figures and explorer.tabs.titles[-1] == "latent norms"
    assert drawn == []  # not visible yet: not drawn
    explorer.show("norms")
    assert drawn == [0]
    png_pixels(explorer.views["norms"].value)
    explorer.controls["head"].value = 2  # not a control it depends on
    assert drawn == [0]
    explorer.controls["layer"].value = 1
    assert drawn == [0, 1] and explorer.figures["norms"].axes[0].get_title() == "latent norms after layer 1"


# -- trained weights (issue 9): the first view means something ---------------------------------------


def trained_trace(name: str, scene: int):
    """What the explorer must show for a trained model: its resampler on held-out scene `scene`, run here."""
    model = pe.pretrained(name)
    images = pe.held_out_scenes(forward.N_SCENES)[scene].images  # [1, 32, 32]
    with torch.no_grad():
        _, trace = model.resampler(model.embed(images), return_trace=True)
    return trace


def test_the_default_is_the_trained_scenes_model_on_a_held_out_scene(trained):
    c = trained.controls
    assert c["weights"].value == "scenes" and c["input_kind"].value == "scene" and c["scene"].value == 0
    model = pe.pretrained("scenes")
    config = model.resampler.config
    assert (c["n_heads"].value, c["head_dim"].value, c["depth"].value, c["n_latents"].value) == (
        config.n_heads,
        config.head_dim,
        config.depth,
        config.n_latents,
    )
    assert (c["qk_norm"].value, c["latents_in_kv"].value) == (False, True)
    assert c["context_length"].value == 64 and trained.trace.context_length == 64  # 8 x 8 patches, no CLS
    expected = trained_trace("scenes", 0)
    for shown, reference in zip(trained.trace.attentions, expected.attentions):
        torch.testing.assert_close(shown, reference, rtol=0, atol=1e-6)
    assert "trained weights 'scenes'" in trained.status.value and trained.note == "" and trained.message == ""
    assert "held-out scene 0" in trained.describe()
    assert c["layer"].value == config.depth - 1  # the last layer, where the latents find the objects
    np.testing.assert_array_equal(shown_map(trained), trained.trace.attentions[-1][0, 0].numpy())


def test_the_weights_control_switches_and_redraws(trained):
    png, runs = trained.views["head"].value, trained.n_runs
    trained.controls["weights"].value = "random"
    assert trained.n_runs == runs + 1 and trained.run.weights == "random" and trained.message == ""
    assert trained.views["head"].value != png
    assert trained.controls["input_kind"].value == "scene" and trained.run.scene_index == 0  # same scene, untrained
    assert "random weights, seed 0" in trained.status.value
    trained.controls["weights"].value = "scenes"
    assert trained.run.weights == "scenes" and trained.views["head"].value == png  # the same picture again


def test_stepping_through_held_out_scenes(trained):
    runs, before = trained.n_runs, trained.trace
    trained.next_scene.click()
    assert trained.controls["scene"].value == 1 and trained.n_runs == runs + 1 and trained.run.scene_index == 1
    assert not torch.equal(trained.trace.attentions[0], before.attentions[0])
    torch.testing.assert_close(trained.trace.attentions[1], trained_trace("scenes", 1).attentions[1], rtol=0, atol=1e-6)
    trained.set(scene=99)
    trained.next_scene.click()  # past the last one: back to the first
    assert trained.controls["scene"].value == 0 and trained.run.scene_index == 0
    trained.set(weights="random", input_kind="image")
    runs = trained.n_runs
    trained.controls["scene"].value = 5  # the photo does not read scenes: nothing to run again
    assert trained.n_runs == runs


@pytest.mark.parametrize("qk_norm, latents_in_kv", [(True, True), (False, False), (True, False)])
def test_qk_norm_and_latents_in_kv_step_between_the_trained_variants(trained, qk_norm, latents_in_kv):
    trained.set(qk_norm=qk_norm, latents_in_kv=latents_in_kv)
    name = pe.scenes_variant(qk_norm, latents_in_kv)
    assert trained.controls["weights"].value == name and trained.run.weights == name and trained.message == ""
    assert f"trained variant {name!r}" in trained.status.value
    expected = trained_trace(name, 0)
    torch.testing.assert_close(trained.trace.attentions[-1], expected.attentions[-1], rtol=0, atol=1e-6)
    assert trained.trace.n_keys == (64 + 8 if latents_in_kv else 64)


@pytest.mark.parametrize(
    "name, value, why",
    [
        ("depth", 3, "depth 3 (trained: 2)"),
        ("n_heads", 8, "n_heads 8 (trained: 4)"),
        ("input_kind", "image", "the trained models read scenes, not input 'image'"),
    ],
)
def test_an_architecture_without_trained_weights_switches_to_random_and_says_so(trained, name, value, why):
    runs = trained.n_runs
    trained.controls[name].value = value
    assert trained.n_runs == runs + 1 and trained.message == ""
    assert trained.controls["weights"].value == "random" and trained.run.weights == "random"
    assert why in trained.note and "switched to random weights" in trained.note
    assert why in trained.status.value


def test_choosing_trained_weights_sets_the_architecture_to_the_trained_one(explorer):
    explorer.set(depth=6, n_heads=8, qk_norm=True, layer=5)
    explorer.controls["weights"].value = "scenes-qknorm"
    c = explorer.controls
    assert (c["depth"].value, c["n_heads"].value, c["qk_norm"].value) == (2, 4, True)
    assert c["input_kind"].value == "scene" and c["context_length"].value == 64
    assert explorer.run.weights == "scenes-qknorm" and explorer.message == ""
    assert c["layer"].value == 1 and c["layer"].max == 1  # clamped to the trained depth


def test_a_trained_model_reads_a_larger_canvas(trained):
    """Fourier positions: the same latents read a 40 x 40 canvas (10 x 10 patches); s changes, l stays."""
    trained.controls["context_length"].value = 100
    assert trained.message == "" and trained.run.weights == "scenes"
    assert tuple(trained.trace.attentions[0].shape) == (1, 4, 8, 100 + 8)
    assert tuple(trained.run.scene.images.shape) == (1, 40, 40)


def test_a_bad_setting_with_trained_weights_keeps_the_last_view(trained):
    png, runs, trace = trained.views["head"].value, trained.n_runs, trained.trace
    trained.controls["context_length"].value = 65  # a photo's length, not a scene's
    assert "context_length must be a square number of patches" in trained.message and "65" in trained.message
    assert_kept(trained, png, runs, trace)


def test_missing_trained_weights_are_a_message(trained, monkeypatch):
    png, runs, trace = trained.views["head"].value, trained.n_runs, trained.trace

    def missing(name):
        raise FileNotFoundError(f"the weights of {name!r} are missing")

    monkeypatch.setattr(forward, "trained_model", missing)
    trained.controls["qk_norm"].value = True
    assert "the weights of 'scenes-qknorm' are missing" in trained.message
    assert_kept(trained, png, runs, trace)


def test_the_image_view_draws_on_the_scene_canvas(trained):
    trained.set(layer=1, head=2)
    trained.show("image")
    fig = trained.figures["image"]
    panels = [ax for ax in fig.axes if ax.images and getattr(ax, "_colorbar", None) is None]
    assert len(panels) == 2 * 8  # the chosen head and the heads' mean, for each of the 8 latents
    assert all(ax.images[0].get_array().shape == (32, 32) for ax in panels)  # the 32 x 32 canvas, no CLS
    assert [ax.get_title() for ax in panels[:8]] == [f"latent {j}" for j in range(8)]
    context = trained.trace.attentions[1][0, 2, 0, :64]  # latent 0, head 2: 8 x 8 patches, row by row
    expected = (context / context.sum()).reshape(8, 8).repeat_interleave(4, 0).repeat_interleave(4, 1)
    np.testing.assert_allclose(panels[0].images[0].get_array(), expected.numpy(), atol=1e-6)
    assert "held-out scene 0" in fig._suptitle.get_text() and "trained 'scenes'" in fig._suptitle.get_text()


# -- the live explorer (issue 20): the browser draws, the kernel sends tensors once per run -------------


def live_attention(explorer) -> np.ndarray:
    """[scenes, depth, h, l, n]: the float32 tensor the live view holds, read back from its bytes."""
    meta = explorer.live.meta
    shape = (len(meta["scenes"]), meta["depth"], meta["heads"], meta["latents"], meta["n"])
    return np.frombuffer(explorer.live.attn, dtype="<f4").reshape(shape)


def test_live_explorer_sends_the_trace_once_per_run():
    explorer = pe.Explorer()
    assert explorer.live is not None and explorer.live in explorer.ui.children  # the view the UI shows
    assert explorer.tabs not in explorer.ui.children
    sent = live_attention(explorer)
    for layer, attention in enumerate(explorer.trace.attentions):
        assert np.array_equal(sent[0, layer], attention[0].numpy())
    assert explorer.live.meta["grid"] == 8 and explorer.live.meta["scenes"][0]["label"] == "held-out scene 0"
    # view changes: no forward pass, no PNG, the same tensors; the browser is told what to show
    attn, runs = explorer.live.attn, explorer.n_runs
    explorer.set(layer=0, head=3, latent=5)
    assert (explorer.live.layer, explorer.live.head, explorer.live.latent) == (0, 3, 5)
    assert explorer.live.attn is attn and explorer.n_runs == runs and explorer.n_renders == 0
    explorer.show("entropy")
    assert explorer.live.tab == "entropy" and explorer.n_renders == 0
    # an architecture change: one run, new tensors of the new shape, the view controls kept where they fit
    explorer.set(weights="random", n_heads=2, depth=3)
    assert explorer.n_runs == runs + 1
    assert live_attention(explorer).shape == (1, 3, 2, 8, 72)
    assert np.array_equal(live_attention(explorer)[0, 2], explorer.trace.attentions[2][0].numpy())
    assert (explorer.live.layer, explorer.live.head) == (0, 1)  # head 3 clamped to the 2 heads
    # a click in the browser moves the slider
    explorer.live.layer = 2
    assert explorer.controls["layer"].value == 2 and explorer.n_runs == runs + 1


def test_live_explorer_keeps_the_last_good_view_on_a_bad_setting():
    explorer = pe.Explorer()
    attn, meta = explorer.live.attn, explorer.live.meta
    explorer.set(context_length=65)
    assert "square number" in explorer.message and "Cannot show this setting" in explorer.problem.value
    assert explorer.live.attn is attn and explorer.live.meta == meta
    explorer.set(context_length=64)
    assert explorer.message == ""


def test_live_explorer_on_the_photo_knows_its_cls_token():
    explorer = pe.Explorer(weights="random")
    meta = explorer.live.meta
    assert (meta["s"], meta["grid"], meta["cls"], meta["n"]) == (257, 16, 1, 265)
    assert meta["scenes"][0]["channels"] == 3
    explorer.set(input_kind="random")
    assert explorer.live.meta["grid"] == 0  # random tokens have no picture: the image tab says so
