"""digits.py: the digits classifier learns, is seeded, moves to the device it is given; chapter 4's figures."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import perceiver_edu as pe
from perceiver_edu import digits, viz

CHANCE = 10.0  # % for 10 classes


@pytest.fixture(scope="module")
def data():
    return digits.load_digits_split()


@pytest.fixture(scope="module")
def short_run(data):
    # 300 steps: a few seconds on one core, long enough to be far above chance
    return digits.train_digits(steps=300, eval_every=100, progress=False, data=data)


# -- data -----------------------------------------------------------------------------------------


def test_split_is_fixed_disjoint_and_complete(data):
    again = digits.load_digits_split()
    assert torch.equal(data.test_images, again.test_images) and torch.equal(data.train_labels, again.train_labels)
    assert len(data.train_labels) + len(data.test_labels) == 1797
    assert len(data.test_labels) == round(1797 * 0.2)
    assert data.train_images.shape[1:] == (8, 8) and data.train_images.dtype == torch.float32
    assert 0.0 <= float(data.train_images.min()) and float(data.train_images.max()) == 1.0
    # no image sits in both halves (a leak would inflate the held-out accuracy)
    train = {tuple(x.flatten().tolist()) for x in data.train_images}
    leaked = sum(tuple(x.flatten().tolist()) in train for x in data.test_images)
    assert leaked == 0
    assert set(data.test_labels.tolist()) == set(range(10))
    other = digits.load_digits_split(seed=1)
    assert not torch.equal(other.test_labels, data.test_labels)


def test_bad_test_fraction_is_explained():
    with pytest.raises(ValueError, match="test_fraction"):
        digits.load_digits_split(test_fraction=1.5)


# -- the model ------------------------------------------------------------------------------------


def test_one_token_per_pixel_with_its_position():
    embed = digits.PixelEmbedding(embed_dim=16)
    images = torch.zeros(2, 8, 8)
    images[1, 3, 5] = 1.0
    context = embed(images)  # [b, s, e]
    assert context.shape == (2, 64, 16)
    # blank pixels differ only by position, so tokens of a blank image are all different
    assert torch.cdist(context[0], context[0]).fill_diagonal_(1.0).min() > 0
    # lighting pixel (y=3, x=5) changes token 3 * 8 + 5 and no other
    changed = (context[1] - context[0]).abs().sum(-1) > 0
    assert changed.nonzero().flatten().tolist() == [29]
    # the position is a row vector plus a column vector: pixels in one row share the row part
    position = embed.position()
    assert torch.allclose(position[29], embed.row[3] + embed.column[5])


def test_classifier_shapes_and_trace():
    torch.manual_seed(0)
    cfg = pe.ResamplerConfig.tiny(n_latents=4)
    model = digits.DigitClassifier(cfg)
    logits, trace = model(torch.rand(3, 8, 8), return_trace=True)
    assert logits.shape == (3, 10)
    assert trace.context_length == 64 and trace.attentions[0].shape == (3, cfg.n_heads, 4, 64 + 4)
    maps = pe.image_attention(trace)  # [depth, b, h, l, s]
    assert maps.shape == (cfg.depth, 3, cfg.n_heads, 4, 64)
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
    assert pe.image_entropy(trace).shape == (cfg.depth, 3, cfg.n_heads, 4)


def test_bad_images_are_explained():
    model = digits.DigitClassifier()
    with pytest.raises(ValueError, match=r"images\[None\]"):
        model(torch.rand(8, 8))
    with pytest.raises(ValueError, match=r"\[b, 8, 8\]"):
        model(torch.rand(2, 64))
    with pytest.raises(TypeError, match="floats"):
        model(torch.ones(2, 8, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="ResamplerConfig"):
        digits.DigitClassifier({"embed_dim": 32})


def test_entropy_and_overlap_measure_what_they_say():
    flat = torch.full((1, 1, 1, 1, 64), 1 / 64)  # [depth, b, h, l, s]
    one_pixel = torch.zeros(1, 1, 1, 1, 64)
    one_pixel[..., 7] = 1.0
    assert pe.attention_entropy(flat).item() == pytest.approx(np.log(64))
    assert pe.attention_entropy(one_pixel).item() == pytest.approx(0.0, abs=1e-6)
    same = torch.stack([flat[0, 0, 0, 0]] * 3)  # [l, s]: three latents with one map
    apart = torch.eye(3, 64)  # three latents each on its own pixel
    half = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    assert pe.latent_overlap(same).item() == pytest.approx(1.0)
    assert pe.latent_overlap(apart).item() == pytest.approx(0.0)
    assert pe.latent_overlap(half).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2 latents"):
        pe.latent_overlap(torch.ones(1, 64) / 64)


# -- training -------------------------------------------------------------------------------------


def test_short_training_learns(short_run, data):
    before = digits.accuracy(short_run.initial_model(), data.test_images, data.test_labels)
    assert before < 30  # random weights: about chance
    assert short_run.accuracy >= 8 * CHANCE  # 300 steps: far above chance on images it never saw
    losses = short_run.history["loss"]
    assert losses[-1] < losses[0] / 3
    assert short_run.history["step"] == [100, 200, 300]
    # the model is handed back ready to use: eval mode, the accuracy it reports is the one it has
    assert not short_run.model.training
    assert digits.accuracy(short_run.model, data.test_images, data.test_labels) == pytest.approx(short_run.accuracy)


def test_training_sharpens_the_attention(short_run, data):
    with torch.no_grad():
        _, trained = short_run.model(data.test_images[:64], return_trace=True)
        _, initial = short_run.initial_model()(data.test_images[:64], return_trace=True)
    before = pe.image_entropy(initial).mean((1, 3))  # [depth, h]
    after = pe.image_entropy(trained).mean((1, 3))
    assert (after < before).float().mean() > 0.5  # most heads sharper
    overlap_before = pe.latent_overlap(pe.image_attention(initial).mean(2)).mean()
    overlap_after = pe.latent_overlap(pe.image_attention(trained).mean(2)).mean()
    assert overlap_after < overlap_before  # the latents spread out over the digit


def test_seeded_runs_repeat_and_seeds_differ(data):
    a = digits.train_digits(steps=20, eval_every=10, progress=False, data=data, seed=3)
    b = digits.train_digits(steps=20, eval_every=10, progress=False, data=data, seed=3)
    c = digits.train_digits(steps=20, eval_every=10, progress=False, data=data, seed=4)
    assert a.history == b.history
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.model.head.weight, c.model.head.weight)
    assert a.initial_state.keys() == a.model.state_dict().keys()
    assert not torch.equal(a.initial_state["head.weight"], a.model.head.weight)


def test_training_leaves_global_torch_settings_alone(data):
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    digits.train_digits(steps=2, eval_every=1, progress=False, data=data, threads=1)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_quiet_by_default_in_tests_and_bar_on_request(data, capsys):
    digits.train_digits(steps=2, eval_every=1, progress=False, data=data)
    assert capsys.readouterr().err == ""
    digits.train_digits(steps=2, eval_every=1, progress=True, data=data)
    assert "training" in capsys.readouterr().err  # tqdm's text bar outside Jupyter


def test_bad_training_arguments_are_explained(data):
    with pytest.raises(ValueError, match="steps must be a positive int"):
        digits.train_digits(steps=0, progress=False, data=data)
    with pytest.raises(ValueError, match="batch_size 5000 is larger"):
        digits.train_digits(steps=1, batch_size=5000, progress=False, data=data)


# -- devices --------------------------------------------------------------------------------------


def check_runs_on(device, data):
    seen = []
    result = digits.train_digits(steps=3, eval_every=3, progress=False, data=data, device=device)
    model = result.model
    hook = model.embed.register_forward_pre_hook(lambda module, args: seen.append(args[0].device))
    digits.accuracy(model, data.test_images[:10], data.test_labels[:10])
    hook.remove()
    expected = torch.device(device)
    assert {p.device.type for p in model.parameters()} == {expected.type}
    assert seen and all(d.type == expected.type for d in seen)
    assert result.device.startswith(expected.type)
    return result


def train_and_record_batch_devices(device, data):
    """check_runs_on(device), also noting which device every training batch reached the model on."""
    seen = []
    original = digits.DigitClassifier.forward

    def spy(self, images, return_trace=False):
        seen.append(images.device.type)
        return original(self, images, return_trace)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(digits.DigitClassifier, "forward", spy)
        result = check_runs_on(device, data)
    assert seen and set(seen) == {device}  # the training batches went to the device too
    return result


def test_trains_on_the_cpu_device_it_is_given(data):
    train_and_record_batch_devices("cpu", data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_missing_device_is_explained(data):
    with pytest.raises(ValueError, match=r"device 'cuda' is not available on this machine; available: \['"):
        digits.train_digits(steps=1, progress=False, data=data, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda(data):
    result = train_and_record_batch_devices("cuda", data)
    cpu = digits.train_digits(steps=3, eval_every=3, progress=False, data=data, device="cpu")
    # same seed, same batches: the first loss agrees up to float rounding on the two devices
    assert result.history["loss"][0] == pytest.approx(cpu.history["loss"][0], rel=1e-3)


# -- chapter 4's figures --------------------------------------------------------------------------


def labelled(fig):
    assert isinstance(fig, Figure)
    assert fig._suptitle is not None or any(ax.get_title() for ax in fig.axes)
    drawn = [ax for ax in fig.axes if ax.get_visible() and (ax.images or ax.lines or ax.patches or ax.collections)]
    assert any(ax.get_xlabel() for ax in drawn) and any(ax.get_ylabel() for ax in drawn)
    fig.canvas.draw()  # renders without error
    return fig


def colorbar_labels(fig):
    """The colour bars' labels, with line breaks read as spaces (a long label may wrap onto two lines)."""
    return [" ".join(ax.get_ylabel().split()) for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_digit_figures(short_run, data):
    opened = plt.get_fignums()
    images, labels = data.test_images[:6], data.test_labels[:6]
    predictions = labels.clone()
    predictions[2] = (labels[2] + 1) % 10
    fig = labelled(viz.plot_digits(images, labels, predictions))
    assert colorbar_labels(fig) == ["pixel brightness"]
    panel_titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert f"{int(labels[2])} read as {int(predictions[2])}" in panel_titles  # the mistake is named
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    np.testing.assert_allclose(np.asarray(shown[0]), images[0].numpy())

    _, trace = short_run.model(images, return_trace=True)
    maps = pe.image_attention(trace)[1, 0]  # layer 1, example 0: [h, l, s]
    fig = labelled(viz.plot_latents_on_digit(maps, images[0], layer=1))
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(panels) == maps.shape[0] * maps.shape[1]  # one panel per head and latent
    np.testing.assert_allclose(np.asarray(panels[1].images[0].get_array()), maps[0, 1].reshape(8, 8).numpy(), rtol=1e-6)
    assert colorbar_labels(fig) == ["attention weight on each pixel"]
    assert any(ax.collections for ax in panels)  # the digit's outline
    one_row = labelled(viz.plot_latents_on_digit(maps.mean(0)))
    assert len([ax for ax in one_row.axes if ax.images and ax.get_label() != "<colorbar>"]) == maps.shape[1]

    fig = labelled(viz.plot_training_curves({"off": short_run.history, "on": short_run.history}, target=96))
    lines = fig.axes[1].lines
    assert [list(line.get_ydata()) for line in lines[:2]] == [short_run.history["test_accuracy"]] * 2
    assert any(line.get_ydata()[0] == 96 for line in lines)  # the target

    before, after = torch.tensor([[4.0, 4.1], [4.0, 3.9]]), torch.tensor([[3.0, 4.2], [2.0, 3.0]])
    fig = labelled(viz.plot_entropy_change(before, after, max_entropy=4.16))
    assert "3 of 4 heads sharper" in fig.axes[0].get_title()
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx(before.flatten().tolist() + after.flatten().tolist())
    assert plt.get_fignums() == opened  # no pyplot figure left open


def test_digit_figures_explain_bad_input(short_run):
    with pytest.raises(ValueError, match="square number of pixels"):
        viz.plot_latents_on_digit(torch.rand(4, 8, 60))
    with pytest.raises(ValueError, match=r"image must be \[8, 8\]"):
        viz.plot_latents_on_digit(torch.rand(8, 64), torch.rand(4, 4))
    with pytest.raises(ValueError, match="one number per image"):
        viz.plot_digits(torch.rand(3, 8, 8), labels=[1, 2])
    with pytest.raises(ValueError, match="missing"):
        viz.plot_training_curves({"step": [1]})
    with pytest.raises(ValueError, match="same"):
        viz.plot_entropy_change(torch.rand(2, 4), torch.rand(2, 3), max_entropy=4.0)


def test_figures_reuse_a_given_figure(short_run):
    fig = Figure()
    same = viz.plot_training_curves(short_run.history, fig=fig)
    again = viz.plot_training_curves(short_run.history, fig=fig)
    assert same is fig and again is fig and len(fig.axes) == 2  # cleared, not stacked
