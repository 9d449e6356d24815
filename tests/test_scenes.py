"""scenes.py: the scenes are seeded and right, the model reads any canvas size, the matching and the metrics are right."""

import pytest
import torch

import perceiver_edu as pe
from perceiver_edu import scenes as S
from perceiver_edu.trace import Trace

# -- data -----------------------------------------------------------------------------------------


def test_scenes_are_seeded_and_know_their_objects():
    scenes = S.make_scenes(50, seed=3)
    again = S.make_scenes(50, seed=3)
    assert torch.equal(scenes.images, again.images)
    assert all(torch.equal(a, b) for a, b in zip(scenes.boxes, again.boxes))
    assert not torch.equal(S.make_scenes(50, seed=4).images, scenes.images)
    assert scenes.images.shape == (50, 32, 32) and scenes.images.dtype == torch.float32
    assert 0.0 <= float(scenes.images.min()) and float(scenes.images.max()) <= 1.0
    assert {len(y) for y in scenes.labels} == {2, 3, 4}
    for image, labels, boxes in zip(scenes.images, scenes.labels, scenes.boxes):
        assert labels.dtype == torch.long and boxes.shape == (len(labels), 4)
        assert ((boxes[:, 2] - boxes[:, 0]) == 8).all() and ((boxes[:, 3] - boxes[:, 1]) == 8).all()
        assert (boxes >= 0).all() and (boxes <= 32).all()
        # no two boxes overlap, and every pixel with ink lies in some box
        covered = torch.zeros(32, 32, dtype=torch.long)
        for y0, x0, y1, x1 in boxes.tolist():
            covered[y0:y1, x0:x1] += 1
        assert covered.max() == 1
        assert (image[covered == 0] == 0).all()
        assert all(image[y0:y1, x0:x1].sum() > 0 for y0, x0, y1, x1 in boxes.tolist())


def test_held_out_scenes_use_the_held_out_digits():
    split = pe.load_digits_split()
    test = {tuple(x.flatten().tolist()) for x in split.test_images}
    train = {tuple(x.flatten().tolist()) for x in split.train_images}
    for scenes, pool in ((S.held_out_scenes(20, seed=0), test), (S.make_scenes(20, seed=0), train)):
        for image, boxes in zip(scenes.images, scenes.boxes):
            for y0, x0, y1, x1 in boxes.tolist():
                assert tuple(image[y0:y1, x0:x1].flatten().tolist()) in pool


def test_bigger_canvas_and_bad_arguments():
    scenes = S.make_scenes(5, seed=0, canvas=48, max_objects=6)
    assert scenes.images.shape == (5, 48, 48)
    with pytest.raises(ValueError, match="n must be"):
        S.make_scenes(0)
    with pytest.raises(ValueError, match="split"):
        S.make_scenes(2, split="validation")
    with pytest.raises(ValueError, match="canvas"):
        S.make_scenes(2, canvas=20, max_objects=4)


# -- the model ------------------------------------------------------------------------------------


def test_tokens_are_patches_row_by_row_that_see_their_neighbourhood():
    torch.manual_seed(0)
    model = S.SceneModel().eval()
    blank = torch.zeros(1, 32, 32)
    lit = blank.clone()
    lit[0, 13, 22] = 1.0  # a pixel of patch (row 3, column 5): token 3 * 8 + 5 = 29
    with torch.no_grad():
        changed = (model.embed(lit) - model.embed(blank)).abs().sum(-1)[0] > 0  # [s]
    assert changed[29]
    # a token sees pixels 4r-3..4r+5 (the backbone's 7 x 7 window around its patch), no further
    rows, columns = (changed.reshape(8, 8).nonzero().T).tolist()
    assert set(rows) <= {2, 3, 4} and set(columns) <= {5, 6}
    # blank patches differ only by their position: every token of a blank canvas is different
    context = model.embed(blank)[0]
    assert torch.cdist(context, context).fill_diagonal_(1.0).min() > 0


def test_fourier_positions_are_normalised():
    positions = S.fourier_positions(8, 8, n_bands=6)
    assert positions.shape == (64, 26)
    # the first feature of each axis (y, then x after 13 features) runs from -1 to 1 whatever the size
    for rows in (8, 12):
        p = S.fourier_positions(rows, rows)
        assert p[0, 0] == pytest.approx(-1 + 1 / rows) and p[-1, 0] == pytest.approx(1 - 1 / rows)
        assert p[0, 13] == pytest.approx(-1 + 1 / rows) and p[rows - 1, 13] == pytest.approx(1 - 1 / rows)
    assert torch.cdist(positions, positions).fill_diagonal_(1.0).min() > 0


def test_model_reads_a_canvas_of_any_size_with_the_same_latents():
    torch.manual_seed(0)
    model = S.SceneModel().eval()
    for side in (32, 48):
        images = S.make_scenes(3, seed=0, canvas=side).images
        context = model.embed(images)
        prediction, trace = model(images, return_trace=True)
        s = (side // 4) ** 2
        assert context.shape == (3, s, 64)
        assert prediction.logits.shape == (3, 8, 11) and prediction.boxes.shape == (3, 8, 4)
        assert ((prediction.boxes >= 0) & (prediction.boxes <= 1)).all()
        assert trace.context_length == s and trace.attentions[0].shape == (3, 4, 8, s + 8)
    with pytest.raises(ValueError, match="multiples of the patch size 4"):
        model(torch.zeros(1, 30, 32))
    with pytest.raises(ValueError, match=r"images\[None\]"):
        model(torch.zeros(32, 32))


# -- matching and metrics -------------------------------------------------------------------------


def test_hungarian_match_finds_the_cheapest_assignment():
    # latent 2 says class 7 at the first box, latent 0 says class 1 at the second box
    logits = torch.full((1, 3, 11), -10.0)
    logits[0, 2, 7] = logits[0, 0, 1] = 10.0
    logits[0, 1, 10] = 10.0
    boxes = torch.tensor([[[0.5, 0.5, 0.75, 0.75], [0.0, 0.0, 0.1, 0.1], [0.0, 0.0, 0.25, 0.25]]])
    prediction = S.SetPrediction(logits, boxes)
    labels, true_boxes = [torch.tensor([7, 1])], [torch.tensor([[0, 0, 8, 8], [16, 16, 24, 24]])]
    ((rows, cols),) = S.hungarian_match(prediction, labels, true_boxes, (32, 32))
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 2, 1: 0}
    # a perfect prediction costs little; swapping the two objects' latents costs more
    good = S.set_loss(prediction, labels, true_boxes, (32, 32))
    bad = S.set_loss(prediction, [torch.tensor([1, 7])], true_boxes, (32, 32))
    assert good < 0.01 < bad


def test_object_masks_are_the_patches_a_box_touches():
    masks = S.object_masks(torch.tensor([[0, 0, 8, 8], [6, 10, 14, 18]]), (16, 16), 4)  # [k, s], 4 x 4 patches
    grid = masks.reshape(2, 4, 4)
    assert grid[0].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    # rows 6..13 touch patch rows 1..3, columns 10..17 touch patch columns 2..3 (4 is off the canvas)
    assert grid[1].nonzero().tolist() == [[r, c] for r in (1, 2, 3) for c in (2, 3)]


def test_object_overlap_weighs_each_patch_by_its_pixels_inside_the_box():
    # a 16 x 16 canvas of 4 x 4 patches; the box rows 2..9, columns 0..7: patch rows 0 and 2 half inside, row 1 whole
    (overlap,) = S.object_overlap(torch.tensor([[2, 0, 10, 8]]), (16, 16), 4).reshape(1, 4, 4)
    assert overlap.tolist() == [[0.5, 0.5, 0, 0], [1, 1, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0, 0]]
    # a box one pixel into a patch's corner: that patch counts 1/16, and an 8 x 8 box always holds 4 patches' pixels
    (corner,) = S.object_overlap(torch.tensor([[3, 3, 11, 11]]), (16, 16), 4)
    assert corner[0] == pytest.approx(1 / 16) and corner.sum() == pytest.approx(4.0)
    # object_masks (the "touch" measure) is where the overlap is not zero
    boxes = torch.tensor([[3, 3, 11, 11], [6, 10, 14, 18]])
    assert torch.equal(S.object_masks(boxes, (16, 16), 4), S.object_overlap(boxes, (16, 16), 4) > 0)


def test_object_attention_counts_a_half_inside_patch_half_under_overlap_and_whole_under_touch():
    # one latent on one patch; the box covers the left half of that patch's pixels (8 x 8 canvas, 4 x 4 patches)
    maps = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    boxes = [torch.tensor([[0, 0, 4, 2]])]
    (overlap,) = S.object_attention(maps, boxes, (8, 8), 4)
    (touch,) = S.object_attention(maps, boxes, (8, 8), 4, weigh="touch")
    assert overlap.item() == pytest.approx(0.5) and touch.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weigh must be 'overlap' or 'touch'; got 'ink'"):
        S.object_attention(maps, boxes, (8, 8), 4, weigh="ink")


def _trace_attending(maps: torch.Tensor, latents_in_kv: bool = True) -> Trace:
    """A Trace whose last layer's heads all have the context attention `maps` [b, l, s] (plus some on latents)."""
    b, l, s = maps.shape
    attn = maps[:, None].expand(b, 2, l, s)
    if latents_in_kv:
        attn = torch.cat([0.5 * attn, torch.full((b, 2, l, l), 0.5 / l)], dim=-1)
    return Trace((attn,), (attn,), (torch.zeros(b, l, 4),), context_length=s, latents_in_kv=latents_in_kv)


def test_latent_maps_and_object_attention():
    # 2 latents over 4 patches (a 8 x 8 canvas of 4 x 4 patches): latent 0 on patch 0, latent 1 split over 2 and 3
    maps = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]])
    recovered = S.latent_maps(_trace_attending(maps))  # the latents' share is dropped and the rest renormalised
    assert torch.allclose(recovered, maps)
    boxes = [torch.tensor([[0, 0, 4, 4], [4, 0, 8, 4]])]  # object 0 on patch 0, object 1 on patch 2
    (share,) = S.object_attention(recovered, boxes, (8, 8), 4)  # [l, k]
    assert torch.allclose(share, torch.tensor([[1.0, 0.0], [0.0, 0.5]]))


class _Oracle(torch.nn.Module):
    """A stand-in SceneModel that names the right classes and looks where it is told: to test `evaluate`."""

    def __init__(self, scenes, on_object: bool):
        super().__init__()
        self.scenes, self.on_object, self.patch_size = scenes, on_object, 4
        self.config = pe.ResamplerConfig(embed_dim=4, n_heads=2, n_latents=4)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images, return_trace=False):
        b, l = len(images), 4
        logits = torch.full((b, l, 11), -10.0)
        logits[:, :, 10] = 10.0
        boxes = torch.zeros(b, l, 4)
        maps = torch.full((b, l, 64), 1 / 64)
        for i in range(b):
            j = next(j for j in range(len(self.scenes)) if torch.equal(self.scenes.images[j], images[i]))
            for k, (y, box) in enumerate(zip(self.scenes.labels[j], self.scenes.boxes[j])):
                logits[i, k, 10], logits[i, k, y] = -10.0, 10.0
                boxes[i, k] = box / 32
                if self.on_object:
                    mask = S.object_masks(box[None], (32, 32), 4)[0].float()
                    maps[i, k] = mask / mask.sum()
        return S.SetPrediction(logits, boxes), _trace_attending(maps)


def test_evaluate_scores_right_answers_and_object_attention():
    scenes = S.held_out_scenes(6, seed=1)
    on = S.evaluate(_Oracle(scenes, on_object=True), scenes)
    assert on["object_accuracy"] == 100.0 and on["exact_set_accuracy"] == 100.0
    # the oracle spreads its attention evenly over the patches the box touches: all of it counts under
    # "touch", only the pixels inside the box under "overlap" (4 patches' worth over 4 to 9 patches)
    assert on["object_coverage_touch"] == 100.0 and on["median_object_attention_touch"] == pytest.approx(100.0)
    assert 40 < on["median_object_attention"] < 100 and on["object_coverage"] < 100
    off = S.evaluate(_Oracle(scenes, on_object=False), scenes)
    # flat attention over 64 patches puts at most 9/64 on one object's patches (touch), 4/64 of pixels (overlap)
    assert off["object_coverage_touch"] == 0.0 and off["median_object_attention_touch"] < 15
    assert off["object_coverage"] == 0.0 and off["median_object_attention"] == pytest.approx(100 * 4 / 64)
    assert off["context_entropy"] > on["context_entropy"]


# -- training -------------------------------------------------------------------------------------


def test_short_training_is_seeded_and_learns():
    a = S.train_scenes(steps=40, eval_every=20, eval_scenes=30, progress=False, seed=5)
    b = S.train_scenes(steps=40, eval_every=20, eval_scenes=30, progress=False, seed=5)
    assert a.history == b.history
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert a.history["step"] == [20, 40]
    assert a.history["loss"][-1] < a.history["loss"][0]
    # the initial model is what training started from: the same as a fresh model from the seed
    fresh = S.init_scene_model(seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.initial_model().state_dict().values(), fresh.state_dict().values()))


def test_the_shipped_ablation_file_holds_both_sweeps_with_true_parameter_counts():
    # chapter 4 plots this file (benchmarks/scenes_ablation.py wrote it): every run of the two sweeps
    # through the shipped model is there, and each parameter count is that of the configuration it names
    import json
    from importlib.resources import files

    ablation = json.loads(files("perceiver_edu").joinpath("weights/scenes_ablation.json").read_text())
    runs = {(r["n_latents"], r["depth"]): r for r in ablation["runs"]}
    assert {(l, 2) for l in (2, 4, 8, 16)} | {(8, d) for d in (1, 2, 3, 6)} <= set(runs)
    for (l, depth), r in runs.items():
        model = S.init_scene_model(S.scenes_config(n_latents=l, depth=depth))
        assert r["parameters"] == sum(p.numel() for p in model.parameters())
        assert r["resampler_parameters"] == sum(p.numel() for p in model.resampler.parameters())
        for key in ("object_accuracy", "object_coverage", "object_coverage_touch"):
            assert 0 <= r[key] <= 100
        assert r["object_coverage"] <= r["object_coverage_touch"]  # a patch never counts more than whole
        assert r["cpu_seconds"] > 0
