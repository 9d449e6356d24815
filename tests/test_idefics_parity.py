"""The strongest proof an educational reimplementation can give: same weights, same outputs as transformers.

transformers is a test dependency; its IdeficsPerceiverResampler is built from an IdeficsConfig
(the `hf_idefics_resampler` fixture in conftest.py), nothing is downloaded. Only the tests that build
one skip without transformers.
"""

import pytest
import torch

import perceiver_edu as pe


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("depth", [1, *(pytest.param(d, marks=pytest.mark.slow) for d in (2, 3, 4, 5, 6))])
def test_from_idefics_matches_transformers(depth, qk_norm, hf_idefics_resampler, sizes):
    """transformers -> ours: outputs agree to 1e-5 over head layouts, batch sizes and context lengths."""
    for (n_heads, head_dim), batch in zip(sizes.head_layouts, (1, 2, 3, 4)):
        hf = hf_idefics_resampler(depth, n_heads, head_dim, n_latents=8, qk_norm=qk_norm, seed=depth)
        ours = pe.interop.from_idefics(hf)
        assert ours.config == pe.ResamplerConfig(sizes.embed_dim, depth, n_heads, head_dim, 8, qk_norm=qk_norm)
        for s in sizes.context_lengths:
            context = torch.randn(batch, s, sizes.embed_dim)
            with torch.no_grad():
                expected = hf(context)
                got, trace = ours(context, return_trace=True)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
            for attn in trace.attentions:
                torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_to_idefics_loads_into_transformers(qk_norm, hf_idefics_resampler, sizes):
    """ours -> transformers: our weights, loaded strictly into IdeficsPerceiverResampler, give our outputs."""
    for depth, (n_heads, head_dim), batch in zip((1, 3, 6), sizes.head_layouts, (4, 1, 2)):
        torch.manual_seed(depth)
        ours = pe.PerceiverResampler(pe.ResamplerConfig(sizes.embed_dim, depth, n_heads, head_dim, 5, qk_norm=qk_norm))
        hf = hf_idefics_resampler(depth, n_heads, head_dim, 5, qk_norm, seed=99)
        state = pe.interop.to_idefics(ours)
        assert set(state) == set(hf.state_dict())  # keys exactly as transformers names them
        hf.load_state_dict(state, strict=True)
        for s in (0, 1, 257):
            context = torch.randn(batch, s, sizes.embed_dim)
            with torch.no_grad():
                torch.testing.assert_close(ours(context), hf(context), atol=1e-5, rtol=1e-5)


def test_idefics_key_names():
    state = pe.interop.to_idefics(pe.PerceiverResampler(pe.ResamplerConfig.tiny(depth=2, qk_norm=True)))
    assert "latents" in state and "layer_norm.weight" in state and "layer_norm.bias" in state
    for i in range(2):
        for name in ("context_layer_norm", "latents_layer_norm", "q_layer_norm", "k_layer_norm"):
            assert f"blocks.{i}.0.{name}.weight" in state and f"blocks.{i}.0.{name}.bias" in state
        for name in ("q_proj", "k_proj", "v_proj", "output_proj"):
            assert f"blocks.{i}.0.{name}.weight" in state and f"blocks.{i}.0.{name}.bias" not in state
        assert {f"blocks.{i}.1.ln.weight", f"blocks.{i}.1.fc.weight", f"blocks.{i}.1.c_proj.weight"} <= set(state)
    assert not any("q_layer_norm" in k for k in pe.interop.to_idefics(pe.PerceiverResampler(pe.ResamplerConfig.tiny())))


def test_latents_out_of_kv_cannot_be_exported():
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny(latents_in_kv=False))
    with pytest.raises(ValueError, match="latents_in_kv=False has no IDEFICS counterpart"):
        pe.interop.to_idefics(model)


def test_config_from_idefics_config():
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.IdeficsConfig(
        vision_config=dict(embed_dim=1280),
        perceiver_config=dict(
            resampler_depth=6,
            resampler_n_heads=16,
            resampler_head_dim=96,
            resampler_n_latents=64,
            qk_layer_norms_perceiver=True,
        ),
    )
    assert pe.interop.config_from_idefics(hf_config) == pe.ResamplerConfig.idefics(qk_norm=True)
    assert pe.interop.config_from_idefics(hf_config.to_dict()) == pe.ResamplerConfig.idefics(qk_norm=True)


def test_from_idefics_refuses_other_modules():
    with pytest.raises(TypeError, match="IdeficsPerceiverResampler"):
        pe.interop.from_idefics(torch.nn.Linear(2, 2))


def test_float64_weights_stay_float64(hf_idefics_resampler, sizes):
    hf = hf_idefics_resampler(2, 4, 16, 8, False).double()
    ours = pe.interop.from_idefics(hf)
    context = torch.randn(2, 30, sizes.embed_dim, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(context), hf(context), atol=1e-12, rtol=1e-12)
