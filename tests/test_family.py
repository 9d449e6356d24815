"""The family's seams on their own: masks, the media axis in the trace, presets, bad input.

Parity with each reference is in test_family_parity.py, load_checkpoint in test_checkpoint.py; this
file checks what the references do not show: exactly-zero attention on padding, the errors a learner gets.
"""

from __future__ import annotations

import pytest
import torch

import perceiver_edu as pe
from perceiver_edu import steps


def tiny2(**overrides):
    """A tiny Idefics2-like resampler: RMSNorm, SwiGLU, 4 query heads sharing 2 k/v heads, a mask."""
    torch.manual_seed(0)
    return pe.PerceiverResampler(
        pe.ResamplerConfig.tiny(
            **{
                **dict(
                    norm="rms", mlp="swiglu", n_kv_heads=2, latents_init="ones", accepts_mask=True, subtract_max=False
                ),
                **overrides,
            }
        )
    )


# -- masks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("latents_in_kv", [True, False])
def test_padding_gets_exactly_zero_attention_and_changes_nothing(latents_in_kv):
    model = tiny2(latents_in_kv=latents_in_kv)
    context = torch.randn(3, 20, 32)
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[0, 5:] = 0
    mask[2, 17:] = 0
    out, trace = model(context, attention_mask=mask, return_trace=True)
    for attn in trace.attentions:  # [b, h, l, n]
        assert torch.all(attn[0, :, :, 5:20] == 0) and torch.all(attn[2, :, :, 17:20] == 0)
        assert torch.all(attn[0, :, :, :5] > 0)
        if latents_in_kv:  # the latents are never masked
            assert torch.all(attn[..., 20:] > 0)
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
    noisy = context.clone()
    noisy[0, 5:] = 1000.0  # whatever sits under the padding
    torch.testing.assert_close(model(noisy, attention_mask=mask), out)
    # and padding is the same as cutting the padded tokens off
    torch.testing.assert_close(model(context[:1, :5])[0], out[0], atol=1e-6, rtol=1e-5)


def test_a_fully_padded_example_is_refused_with_a_clear_message():
    model = tiny2()
    mask = torch.ones(2, 6)
    mask[1] = 0
    with pytest.raises(ValueError, match=r"every token of example 1 .* as padding.*Drop that example"):
        model(torch.randn(2, 6, 32), attention_mask=mask)


def test_bad_masks():
    model = tiny2()
    context = torch.randn(2, 6, 32)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(2, 6\).*got \(2, 5\)"):
        model(context, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"only 1 \(real token\) and 0 \(padding\)"):
        model(context, attention_mask=torch.full((2, 6), 2))
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor.*got list"):
        model(context, attention_mask=[[1] * 6] * 2)
    idefics_like = pe.PerceiverResampler(pe.ResamplerConfig.tiny())
    with pytest.raises(ValueError, match=r"takes no attention_mask.*accepts_mask=True"):
        idefics_like(context, attention_mask=torch.ones(2, 6))


def test_mask_steps():
    allowed = steps.key_mask(torch.tensor([[1, 1, 0]]), n_latents=2)
    assert allowed.tolist() == [[True, True, False, True, True]]
    scores = torch.zeros(1, 1, 2, 5)
    attn = steps.softmax(steps.mask_scores(scores, allowed))
    assert attn[0, 0, :, 2].tolist() == [0.0, 0.0] and torch.allclose(attn[..., :2], torch.full((1, 1, 2, 2), 0.25))
    assert steps.mask_scores(scores, None) is scores


# -- the steps of the relatives -------------------------------------------------------------------


def test_grouped_query_equals_repeating_each_kv_head_over_its_group():
    q, k, v = torch.randn(2, 6, 3, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)
    repeated_k = k.repeat_interleave(3, dim=1)  # kv head j serves query heads 3j, 3j+1, 3j+2
    repeated_v = v.repeat_interleave(3, dim=1)
    torch.testing.assert_close(steps.attention_scores(q, k), steps.attention_scores(q, repeated_k))
    attn = steps.stable_softmax(steps.attention_scores(q, k))
    torch.testing.assert_close(steps.weighted_sum(attn, v), steps.weighted_sum(attn, repeated_v))


def test_rms_norm_is_computed_in_float32():
    x = torch.full((1, 4), 300.0, dtype=torch.float16)  # 300**2 = 90000 overflows float16 (max 65504)
    naive = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert not torch.isfinite(naive.pow(2)).all() or torch.all(naive == 0)
    out = steps.rms_norm(x, torch.ones(4, dtype=torch.float16))
    assert out.dtype == torch.float16 and torch.allclose(out.float(), torch.ones(1, 4), atol=1e-3)


def test_mlp_kinds_and_their_parameter_counts():
    e = 32
    counts = {}
    for kind in ("relu", "gelu", "swiglu"):
        ff = pe.FeedForward(pe.ResamplerConfig.tiny(mlp=kind))
        counts[kind] = sum(p.numel() for name, p in ff.named_parameters() if not name.startswith("ln"))
    assert counts["relu"] == counts["gelu"] == 2 * e * 4 * e and counts["swiglu"] == 3 * e * 4 * e
    x = torch.randn(1, 3, e)
    ff = pe.FeedForward(pe.ResamplerConfig.tiny(mlp="swiglu"))
    expected = ff.down_proj(torch.nn.functional.silu(ff.gate_proj(ff.ln(x))) * ff.up_proj(ff.ln(x)))
    torch.testing.assert_close(ff(x), expected)


def test_softmax_without_the_explicit_max_gives_the_same_result():
    scores = torch.randn(2, 3, 4, 9) * 30
    torch.testing.assert_close(steps.softmax(scores), steps.stable_softmax(scores))


# -- the media axis ---------------------------------------------------------------------------------


def test_media_axis_is_folded_into_the_batch_of_the_trace_example_major():
    torch.manual_seed(0)
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny(mlp="gelu", n_media_embeds=3))
    x = torch.randn(2, 3, 10, 32)  # [b, m, s, e]
    out, trace = model(x, return_trace=True)
    assert out.shape == (2, 3, 8, 32)
    assert trace.n_media == 3 and trace.attentions[0].shape == (6, 4, 8, 18)  # [(b m), h, l, s + l]
    by_media = trace.by_media()  # [depth, b, m, h, l, n]
    assert by_media.shape == (2, 2, 3, 4, 8, 18)
    # media 2 of example 1 is row 1 * 3 + 2 of the trace, and equals a run of that media on its own
    torch.testing.assert_close(trace.attentions[0][5], by_media[0, 1, 2])
    alone = model.embed_media(x)[5:6]  # that media with its time embedding added, [1, s, e]
    plain = pe.PerceiverResampler(model.config.replace(n_media_embeds=0))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "media_embeds"})
    _, single = plain(alone, return_trace=True)
    torch.testing.assert_close(single.attentions[0][0], by_media[0, 1, 2])


def test_frames_flatten_into_the_context_of_their_media():
    torch.manual_seed(0)
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny(mlp="gelu", n_media_embeds=2, n_frame_embeds=4))
    x = torch.randn(1, 2, 4, 5, 32)  # [b, m, f, v, e]
    out, trace = model(x, return_trace=True)
    assert out.shape == (1, 2, 8, 32)
    assert trace.context_length == 4 * 5 and trace.n_media == 2 and trace.attentions[0].shape == (2, 4, 8, 28)


def test_permutation_invariance_holds_without_embeddings_and_breaks_with_frame_embeddings():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 4, 6, 32)
    swapped = x[:, :, [1, 0, 2, 3]]  # frames 0 and 1 trade places
    plain = pe.PerceiverResampler(pe.ResamplerConfig.tiny(mlp="gelu"))
    torch.testing.assert_close(plain(x), plain(swapped))
    timed = pe.PerceiverResampler(pe.ResamplerConfig.tiny(mlp="gelu", n_frame_embeds=4))
    assert not torch.allclose(timed(x), timed(swapped), atol=1e-3)


def test_more_media_or_frames_than_embeddings_is_refused():
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny(n_media_embeds=2, n_frame_embeds=3))
    with pytest.raises(ValueError, match=r"3 media \(axis 1\).*at most 2 \(n_media_embeds=2\)"):
        model(torch.randn(1, 3, 5, 32))
    with pytest.raises(ValueError, match=r"4 frames \(axis 2\).*at most 3 \(n_frame_embeds=3\)"):
        model(torch.randn(1, 2, 4, 5, 32))


# -- config and presets -------------------------------------------------------------------------------


def test_presets_match_the_references_sizes():
    i2 = pe.ResamplerConfig.idefics2()
    assert (i2.embed_dim, i2.depth, i2.n_heads, i2.head_dim, i2.n_latents, i2.kv_heads) == (4096, 3, 16, 96, 64, 4)
    assert (i2.norm, i2.mlp, i2.latents_init, i2.accepts_mask, i2.subtract_max, i2.eps) == (
        "rms",
        "swiglu",
        "ones",
        True,
        False,
        1e-6,
    )
    fl = pe.ResamplerConfig.flamingo()
    assert (fl.embed_dim, fl.depth, fl.n_heads, fl.head_dim, fl.n_latents, fl.mlp) == (1024, 6, 8, 64, 64, "gelu")
    assert pe.ResamplerConfig.idefics().norm == "layer" and pe.ResamplerConfig().mlp == "relu"
    assert torch.all(pe.PerceiverResampler(pe.ResamplerConfig.tiny(latents_init="ones")).latents == 1)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("norm", "batch", r"norm must be one of 'layer', 'rms'; got 'batch'"),
        ("mlp", "tanh", r"mlp must be one of 'relu', 'gelu', 'swiglu'; got 'tanh'"),
        ("latents_init", "zeros", r"latents_init must be one of 'randn', 'ones'; got 'zeros'"),
        ("n_kv_heads", 3, r"n_kv_heads must divide n_heads.*n_heads=4, n_kv_heads=3"),
        ("n_kv_heads", 0, r"n_kv_heads must be None \(= n_heads\) or a positive int; got 0"),
        ("n_media_embeds", -1, r"n_media_embeds must be an int >= 0"),
        ("n_frame_embeds", 1.5, r"n_frame_embeds must be an int >= 0"),
        ("accepts_mask", "yes", r"accepts_mask must be True or False"),
        ("norm_eps", 0, r"norm_eps must be None or a positive number"),
    ],
)
def test_bad_seams(field, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        pe.ResamplerConfig.tiny(**{field: value})


# -- bad input to the new entry points -----------------------------------------------------------


@pytest.mark.parametrize(
    "method, expected",
    [
        ("from_idefics2", "Idefics2PerceiverResampler"),
        ("from_flamingo_pytorch", "flamingo_pytorch.PerceiverResampler"),
        ("from_open_flamingo", "OpenFlamingo's helpers.PerceiverResampler"),
        ("from_idefics", "IdeficsPerceiverResampler"),
    ],
)
def test_from_refuses_a_module_of_another_kind_and_names_it(method, expected):
    with pytest.raises(TypeError, match=rf"must be .*{expected}.*got Linear \(from torch"):
        getattr(pe.interop, method)(torch.nn.Linear(2, 2))


def test_from_names_the_reference_a_module_really_comes_from():
    flamingo_pytorch = pytest.importorskip("flamingo_pytorch")
    lucid = flamingo_pytorch.PerceiverResampler(dim=8, depth=1, dim_head=4, heads=2, num_latents=2)
    with pytest.raises(
        TypeError, match=r"looks like flamingo_pytorch's resampler: use perceiver_edu.interop.from_flamingo_pytorch"
    ):
        pe.interop.from_open_flamingo(lucid)


@pytest.mark.parametrize(
    "method, config, message",
    [
        (
            "to_idefics",
            dict(mlp="gelu"),
            r"mlp='gelu' has no IDEFICS counterpart \(IDEFICS has mlp='relu'\)",
        ),
        ("to_idefics", dict(latents_in_kv=False), r"latents_in_kv=False has no IDEFICS counterpart"),
        ("to_idefics2", dict(), r"norm='layer' has no Idefics2 counterpart.*mlp='relu'"),
        ("to_flamingo_pytorch", dict(mlp="gelu"), r"always has media_pos_emb.*n_media_embeds=0"),
        ("to_flamingo_pytorch", dict(n_media_embeds=1), r"mlp='relu' has no flamingo-pytorch counterpart"),
        (
            "to_open_flamingo",
            dict(mlp="gelu", n_kv_heads=2),
            r"n_kv_heads=2 has no OpenFlamingo counterpart",
        ),
    ],
)
def test_export_refuses_what_the_reference_cannot_hold(method, config, message):
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny(**config))
    with pytest.raises(ValueError, match=message):
        getattr(pe.interop, method)(model)


def test_pixel_shuffle_puts_each_square_of_patches_into_one_token():
    side, e = 4, 3
    grid = torch.arange(side * side * e, dtype=torch.float32).reshape(1, side * side, e)  # patches row by row
    out = steps.pixel_shuffle(grid, 2)
    assert out.shape == (1, 4, 4 * e) and torch.equal(out.sort(-1).values.flatten().sort().values, grid.flatten())
    # token 0 holds the top-left 2 x 2 square: patches (0, 0), (0, 1), (1, 0), (1, 1) = 0, 1, 4, 5
    assert torch.equal(out[0, 0], torch.cat([grid[0, 0], grid[0, 1], grid[0, 4], grid[0, 5]]))
    with pytest.raises(ValueError, match=r"square grid.*divisible by factor=3; got 16 tokens"):
        steps.pixel_shuffle(grid, 3)


def test_a_mask_per_media_follows_the_media_into_the_batch():
    model = tiny2()
    x = torch.randn(2, 3, 7, 32)  # [b, m, s, e]
    mask = torch.ones(2, 3, 7)
    mask[1, 2, 4:] = 0
    out = model(x, attention_mask=mask)
    assert out.shape == (2, 3, 8, 32)
    torch.testing.assert_close(out[1, 2], model(x[1:, 2, :4])[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[0, 1], model(x[:1, 1])[0], atol=1e-6, rtol=1e-5)
