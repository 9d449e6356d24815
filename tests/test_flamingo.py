"""The tiny Flamingo (chapter 7): the gated block against flamingo-pytorch, the frozen LM, the gates, the per-image mask."""

from __future__ import annotations

import random

import pytest
import torch

import perceiver_edu as pe
from perceiver_edu import flamingo as fl

ATOL = RTOL = 1e-5


def perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Gates start at 0 and norms at 1: move every parameter, so that a swapped or forgotten weight shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return module.eval()


def media_locations(r: random.Random, b: int, t: int, m: int) -> torch.Tensor:
    """[b, t] bool with up to m "<image>" places per row (some rows start with words before any image)."""
    locations = torch.zeros(b, t, dtype=torch.bool)
    for i in range(b):
        for j in r.sample(range(t), k=r.randint(1, min(m, t))):
            locations[i, j] = True
    return locations


@pytest.mark.parametrize("seed", range(6))
def test_gated_block_matches_flamingo_pytorch_both_ways(seed):
    flamingo_pytorch = pytest.importorskip("flamingo_pytorch")
    from perceiver_edu.interop.flamingo_pytorch import (
        from_flamingo_pytorch_gated,
        to_flamingo_pytorch_gated_state_dict,
    )

    r = random.Random(seed)
    e, heads, d = r.choice([8, 16, 32]), r.choice([1, 2, 4]), r.choice([4, 8, 16])
    b, t, m, l = r.randint(1, 3), r.randint(1, 12), r.randint(1, 4), r.randint(1, 6)
    torch.manual_seed(seed)
    theirs = perturb(flamingo_pytorch.GatedCrossAttentionBlock(dim=e, dim_head=d, heads=heads), seed)
    x, media = torch.randn(b, t, e), torch.randn(b, m, l, e)
    locations = media_locations(r, b, t, m)

    ours = from_flamingo_pytorch_gated(theirs)  # theirs -> ours
    for where in (locations, None):
        torch.testing.assert_close(ours(x, media, where)[0], theirs(x, media, where), atol=ATOL, rtol=RTOL)

    mine = perturb(fl.GatedCrossAttentionBlock(e, heads, d), seed + 100)  # ours -> theirs
    fresh = flamingo_pytorch.GatedCrossAttentionBlock(dim=e, dim_head=d, heads=heads)
    fresh.load_state_dict(to_flamingo_pytorch_gated_state_dict(mine), strict=True)
    for where in (locations, None):
        torch.testing.assert_close(mine(x, media, where)[0], fresh(x, media, where), atol=ATOL, rtol=RTOL)


def test_words_before_any_image_read_nothing():
    block = perturb(fl.GatedCrossAttentionBlock(16, 2, 8), 0)
    locations = torch.tensor([[False, False, True, False]])
    _, attn = block(torch.randn(1, 4, 16), torch.randn(1, 1, 3, 16), locations)
    assert torch.equal(attn[:, :, :2], torch.zeros_like(attn[:, :, :2]))  # no image yet: zero attention
    torch.testing.assert_close(attn[:, :, 2:].sum(-1), torch.ones(1, 2, 2))


def test_media_mask_reads_only_the_latest_image():
    locations = torch.tensor([[True, False, False, True, False]])
    allowed = fl.media_mask(locations, n_media=2, n_latents=3)  # [1, 5, 6]
    expected = torch.tensor([[1, 1, 1, 0, 0, 0]] * 3 + [[0, 0, 0, 1, 1, 1]] * 2, dtype=torch.bool)
    assert torch.equal(allowed[0], expected)


def tiny_model(seed: int = 0, **kwargs) -> fl.TinyFlamingo:
    torch.manual_seed(seed)
    lm = fl.TinyLM(fl.LMConfig(depth=2))
    return fl.build_flamingo(lm, fl.VisionEncoder(), seed=seed, **kwargs)


def test_closed_gates_give_the_lm_exactly():
    model = tiny_model()
    scenes = pe.held_out_scenes(4, seed=3)
    tokens = fl.encode(fl.captions(scenes))
    assert model.gates() == dict(attn=[0.0, 0.0], ff=[0.0, 0.0])
    with torch.no_grad():
        assert torch.equal(model(scenes.images, tokens), model.lm(tokens))
        for block in model.gated.values():  # open a gate: the image now changes the logits
            block.attn_gate.fill_(0.5)
        assert not torch.allclose(model(scenes.images, tokens), model.lm(tokens))


def test_training_leaves_the_frozen_parts_bit_identical_and_opens_the_gates():
    model = tiny_model()
    lm_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    vision_before = {k: v.clone() for k, v in model.vision.state_dict().items()}
    resampler_before = {k: v.clone() for k, v in model.resampler.state_dict().items()}
    result = fl.train_flamingo(model, steps=6, batch_size=8, eval_every=3, eval_scenes=8, progress=False)
    for name, value in model.lm.state_dict().items():
        assert torch.equal(value, lm_before[name]), name
    for name, value in model.vision.state_dict().items():
        assert torch.equal(value, vision_before[name]), name
    assert any(not torch.equal(v, resampler_before[k]) for k, v in model.resampler.state_dict().items())
    assert all(g != 0.0 for g in model.gates()["attn"])  # the gates moved off 0
    assert len(result.first_losses) == 6 and "attn_gate_0" in result.history
    assert not any(p.requires_grad for p in model.lm.parameters())


def test_a_word_cannot_read_a_later_image():
    model = tiny_model(seed=1)
    with torch.no_grad():
        for block in model.gated.values():  # open the gates, as training would
            block.attn_gate.fill_(0.8)
            block.ff_gate.fill_(0.8)
    scenes = pe.held_out_scenes(4, seed=5)
    images = torch.stack([scenes.images[:2], scenes.images[2:]], dim=1)  # [2, 2, H, W]: two images per sequence
    tokens = fl.encode(["1 2 | 3 4 5", "6 | 7 8"], length=10)
    later = tokens.eq(fl.IMAGE).cumsum(-1) >= 2  # [b, t]: the words at or after the second <image>
    changed = images.clone()
    changed[:, 1] = torch.rand_like(changed[:, 1])  # another second image
    with torch.no_grad():
        before, after = model(images, tokens), model(changed, tokens)
    assert torch.equal(before[~later], after[~later])  # the words of the first image do not see it
    assert not torch.allclose(before[later], after[later])  # the words after it do
    changed_first = images.clone()
    changed_first[:, 0] = torch.rand_like(changed_first[:, 0])
    with torch.no_grad():
        assert not torch.allclose(model(changed_first, tokens)[~later], before[~later])


def test_captions_and_tokens_round_trip():
    scenes = pe.held_out_scenes(5, seed=2)
    texts = fl.captions(scenes)
    assert all(t.split() == sorted(t.split()) for t in texts)
    tokens = fl.encode(texts, fl.CAPTION_LENGTH)
    assert tokens.shape == (5, fl.CAPTION_LENGTH) and bool((tokens[:, 0] == fl.IMAGE).all())
    assert [fl.decode(row) for row in tokens] == texts
    left_to_right = fl.captions(scenes, order="left-to-right")
    assert [sorted(t.split()) for t in left_to_right] == [t.split() for t in texts]
    assert fl.caption_scores(["1 2", "3 4"], ["1 2", "3 5"]) == dict(word_accuracy=75.0, exact_caption=50.0)


def test_other_feeds_run_and_shapes():
    scenes = pe.held_out_scenes(2, seed=4)
    tokens = fl.encode(fl.captions(scenes), fl.CAPTION_LENGTH)
    for feed in fl.FEEDS:
        model = tiny_model(feed=feed)
        out = model(scenes.images, tokens, return_trace=True)
        assert out.logits.shape == (2, fl.CAPTION_LENGTH, len(fl.VOCAB))
    assert tiny_model(feed="patches")(scenes.images, tokens, return_trace=True).latents.shape[2] == 64


def test_bad_inputs_get_clear_messages():
    model = tiny_model()
    images = pe.held_out_scenes(2).images
    with pytest.raises(ValueError, match=r"tokens must have shape \[b, t\].*tokens\[None\]"):
        model(images, torch.tensor([1, 3, 2]))
    with pytest.raises(TypeError, match="tokens must be integers"):
        model(images, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="max_len=16"):
        model(images, torch.ones(2, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="vocabulary"):
        model(images, torch.full((2, 3), 99))
    with pytest.raises(ValueError, match=r"images hold 2 sequences but tokens 3"):
        model(images, fl.encode(["1", "2", "3"]))
    with pytest.raises(ValueError, match=r"images must have shape \[b, H, W\] or \[b, m, H, W\]"):
        model(images[0], fl.encode(["1"]))
    with pytest.raises(ValueError, match="digits 0-9 separated by spaces; got 'x'"):
        fl.encode(["1 x"])
    with pytest.raises(ValueError, match="order must be one of"):
        fl.caption(torch.tensor([1, 2]), order="random")
    with pytest.raises(ValueError, match="feed must be one of"):
        tiny_model(feed="pixels")
    with pytest.raises(TypeError, match="lm must be a flamingo.TinyLM"):
        fl.build_flamingo("gpt2", fl.VisionEncoder())
    with pytest.raises(TypeError, match="vision must be a flamingo.VisionEncoder"):
        fl.build_flamingo(fl.TinyLM(), "clip")
    from perceiver_edu.interop.flamingo_pytorch import from_flamingo_pytorch_gated

    with pytest.raises(TypeError, match="GatedCrossAttentionBlock"):
        from_flamingo_pytorch_gated(torch.nn.Linear(2, 2))


def test_the_shipped_tiny_flamingo_loads_and_keeps_the_shipped_lm():
    import importlib

    P = importlib.import_module("perceiver_edu.pretrained")
    model, lm = pe.pretrained("tiny-flamingo"), pe.pretrained("tiny-lm")
    info = P.pretrained_info("tiny-flamingo")
    assert isinstance(model, fl.TinyFlamingo) and isinstance(lm, fl.TinyLM)
    assert not any(p.requires_grad for p in model.lm.parameters()) and not any(
        p.requires_grad for p in model.vision.parameters()
    )
    for name, value in model.lm.state_dict().items():  # the frozen LM inside is the shipped LM, bit for bit
        assert torch.equal(value, lm.state_dict()[name]), name
    assert model.gates() == info["held_out"]["gates"]
    assert len(info["first_losses"]) == 20 and "attn_gate_0" in info["history"]
    scenes = pe.held_out_scenes(200, seed=5)
    figures = fl.evaluate_captions(model, scenes)
    alone = fl.caption_scores(fl.generate(model.lm, None, n=len(scenes)), fl.captions(scenes))
    assert figures["word_accuracy"] > alone["word_accuracy"] + 50  # the image is read: far above the LM's guess


def test_word_maps_are_distributions_over_the_patches():
    from perceiver_edu import flamingo_viz as fv

    model = pe.pretrained("tiny-flamingo")
    scenes = pe.held_out_scenes(3, seed=6)
    said = fl.generate(model, scenes.images)
    maps = fv.word_pixel_maps(model, scenes.images, said)
    assert maps.shape == (3, fl.CAPTION_LENGTH - 1, 8, 8)
    torch.testing.assert_close(maps.sum((-1, -2)), torch.ones(3, fl.CAPTION_LENGTH - 1))
