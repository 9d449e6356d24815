"""FastResampler equals the step model, shares its parameters, and says when it falls back; cost formulas count right.

The configurations are those of tests/test_idefics_parity.py (conftest.py's `sizes`, where the step
model equals transformers), so FastResampler equals transformers there too. The CUDA variants run where a GPU is.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import perceiver_edu as pe
from perceiver_edu import cost
from perceiver_edu.fast import fast_path_support

HAS_CUDA = torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")]),
]
VARIANTS = [  # (arrangement, sdpa)
    ("auto", None),
    ("standard", True),
    ("standard", False),
    ("absorbed", True),
    ("absorbed", False),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("latents_in_kv", [True, pytest.param(False, marks=pytest.mark.slow)])
@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("depth", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(6, marks=pytest.mark.slow)])
def test_fast_equals_the_step_model(depth, qk_norm, latents_in_kv, device, sizes, exact_cuda_matmul, perturbed):
    """To 1e-5 in float32, over the parity test's head layouts, batch sizes and context lengths."""
    for (n_heads, head_dim), batch in zip(sizes.head_layouts, (1, 2, 3, 4)):
        config = pe.ResamplerConfig(
            sizes.embed_dim, depth, n_heads, head_dim, 8, qk_norm=qk_norm, latents_in_kv=latents_in_kv
        )
        model = perturbed(config, seed=depth).to(device)
        for arrangement, sdpa in VARIANTS:
            if arrangement == "absorbed" and qk_norm:
                continue
            fast = pe.FastResampler(model, arrangement, sdpa=sdpa)
            for s in sizes.context_lengths:
                if s == 0 and not latents_in_kv:
                    continue  # no keys at all: the step model refuses too
                context = torch.randn(batch, s, sizes.embed_dim, device=device)
                with torch.no_grad():
                    torch.testing.assert_close(
                        fast(context),
                        model(context),
                        atol=1e-5,
                        rtol=1e-5,
                        msg=lambda m: f"{arrangement}, sdpa={sdpa}, s={s}: {m}",
                    )


def test_fast_equals_transformers_at_the_idefics_scale(hf_idefics_resampler):
    """IDEFICS-9B's resampler sizes (1280, 16 x 96, 64 latents; depth 2 to stay quick), both arrangements, s = 257."""
    hf = hf_idefics_resampler(2, 16, 96, 64, False, embed_dim=1280)
    fast = pe.FastResampler(pe.interop.from_idefics(hf))
    assert type(hf).__name__ == "IdeficsPerceiverResampler"
    context = torch.randn(1, 257, 1280)
    with torch.no_grad():
        expected = hf(context)
        for arrangement in ("standard", "absorbed"):
            fast.arrangement = arrangement
            torch.testing.assert_close(fast(context), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_long_context_stays_within_1e4(perturbed):
    """s = 4096: the absorbed sums run over e = 1280 per score instead of d = 96; still close (see fast.py)."""
    model = perturbed(pe.ResamplerConfig.idefics(depth=1))
    context = torch.randn(1, 4096, 1280)
    with torch.no_grad():
        expected = model(context)
        for arrangement in ("standard", "absorbed"):
            got = pe.FastResampler(model, arrangement)(context)
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_parameters_are_shared_not_copied(perturbed):
    model = perturbed(pe.ResamplerConfig.tiny(depth=2))
    fast = pe.FastResampler(model)
    assert fast.model is model
    own = dict(model.named_parameters())
    shared = dict(fast.named_parameters())
    assert set(shared) == {f"model.{name}" for name in own}
    for name, p in own.items():
        assert shared[f"model.{name}"] is p and shared[f"model.{name}"].data_ptr() == p.data_ptr()
    # a change to the model's weights is seen by the fast path, also after the folded weights were cached
    context = torch.randn(2, 20, 32)
    for arrangement in ("standard", "absorbed"):
        fast.arrangement = arrangement
        with torch.no_grad():
            before = fast(context)
            model.blocks[1][0].context_layer_norm.bias.add_(0.5)
            model.blocks[0][0].k_proj.weight.mul_(1.5)
            after = fast(context)
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, model(context).detach(), atol=1e-5, rtol=1e-5)
        # load_state_dict copies into the same tensors (same data_ptr): only their version counter moves
        model.load_state_dict({k: v * 0.9 for k, v in model.state_dict().items()})
        with torch.no_grad():
            torch.testing.assert_close(fast(context), model(context), atol=1e-5, rtol=1e-5)


def test_gradients_flow_to_the_shared_parameters(perturbed):
    """Outside no_grad the folded weights are rebuilt each call, so training through the fast path works."""
    model = perturbed(pe.ResamplerConfig.tiny(depth=2))
    context = torch.randn(2, 20, 32)
    for arrangement in ("standard", "absorbed"):
        model.zero_grad()
        model(context).square().sum().backward()
        expected = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        pe.FastResampler(model, arrangement)(context).square().sum().backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, expected[name], atol=1e-4, rtol=1e-4, msg=name)


def test_auto_keeps_the_arrangement_it_measured_faster_per_shape(perturbed):
    model = perturbed(pe.ResamplerConfig(embed_dim=48, depth=2, n_heads=4, head_dim=12, n_latents=5))
    fast = pe.FastResampler(model)
    with torch.no_grad():
        for i, shape in enumerate(((1, 30, 48), (3, 30, 48), (1, 30, 48))):
            context = torch.randn(*shape)
            torch.testing.assert_close(fast(context), model(context), atol=1e-5, rtol=0)
            if i == 0:  # both arrangements ran on this first call; the one not kept has freed its buffers
                assert set(fast._workspace) == {fast.measured[((1, 30, 48), torch.float32, "cpu")]}
    assert set(fast.measured) == {((1, 30, 48), torch.float32, "cpu"), ((3, 30, 48), torch.float32, "cpu")}
    assert set(fast.measured.values()) <= {"standard", "absorbed"}
    qk = pe.FastResampler(perturbed(model.config.replace(qk_norm=True)))
    with torch.no_grad():
        qk(torch.randn(1, 30, 48))
    assert fast.measured and not qk.measured  # with QK-norm there is nothing to choose: standard, untimed


@pytest.mark.parametrize(
    "arrangement, buffer_floats",
    [
        ("standard", 2 * 30 * 2 * 48 + 2 * 2 * 35 * 48),  # k/v [b s, 2 h d]; joined k, v [b, n, h d]
        ("absorbed", 2 * 4 * 5 * 48 + 2 * 20 * 48 + 2 * 48 * 48 + 2 * 4 * 5 * 12),
    ],
)  # u [b, h, l, e], scores [b, h l, 48], keys [b, 48, e], heads
def test_reused_buffers_leave_earlier_results_and_modes_alone(arrangement, buffer_floats, perturbed):
    model = perturbed(pe.ResamplerConfig(embed_dim=48, depth=3, n_heads=4, head_dim=12, n_latents=5))
    fast = pe.FastResampler(model, arrangement)
    first_context, second_context = torch.randn(2, 30, 48), torch.randn(2, 30, 48)
    with torch.no_grad():
        first = fast(first_context)
        kept = first.clone()
        second = fast(second_context)  # the same buffers, written again
    assert fast.workspace_bytes() == 4 * buffer_floats  # float32; the 35 keys of the absorbed arrangement padded to 48
    torch.testing.assert_close(first, kept, atol=0, rtol=0)  # the first result does not share memory with them
    torch.testing.assert_close(second, model(second_context), atol=1e-5, rtol=0)
    with torch.inference_mode():  # inference tensors get buffers of their own, and back again
        torch.testing.assert_close(fast(first_context), kept, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(fast(first_context), kept, atol=1e-6, rtol=0)


def test_the_fast_paths_pieces_equal_what_they_replace(perturbed):
    """headwise and mlp_in_blocks_ (chapter 6 times them) against the plain operations."""
    torch.manual_seed(0)
    a, weight = torch.randn(3, 4, 5, 6), torch.randn(4, 6, 7)
    expected = torch.einsum("b h m k, h k n -> b h m n", a, weight)
    torch.testing.assert_close(pe.fast.headwise(a, weight), expected)
    out = torch.empty(3, 4, 5, 7)
    assert pe.fast.headwise(a, weight, out=out) is out
    torch.testing.assert_close(out, expected)
    feed_forward = perturbed(pe.ResamplerConfig(embed_dim=24, depth=1, n_heads=2, head_dim=6, n_latents=3)).blocks[0][1]
    latents = torch.randn(2, 3, 24)
    expected = latents + feed_forward(latents)
    torch.testing.assert_close(
        pe.fast.mlp_in_blocks_(latents, feed_forward), expected
    )  # with gradients: latents untouched
    torch.testing.assert_close(latents + feed_forward(latents), expected, atol=0, rtol=0)
    with torch.no_grad():
        summed = latents.clone()
        assert pe.fast.mlp_in_blocks_(summed, feed_forward) is summed  # without: the sum is taken in place
    torch.testing.assert_close(summed, expected)


def test_no_trace():
    fast = pe.FastResampler(pe.PerceiverResampler(pe.ResamplerConfig.tiny()))
    with pytest.raises(ValueError, match="records no trace"):
        fast(torch.randn(1, 5, 32), return_trace=True)


def test_bad_input_gets_the_step_models_message():
    fast = pe.FastResampler(pe.PerceiverResampler(pe.ResamplerConfig.tiny()))
    with pytest.raises(ValueError, match="context has embed_dim 16 but the resampler expects 32"):
        fast(torch.randn(1, 5, 16))
    with pytest.raises(TypeError, match="model must be a pe.PerceiverResampler"):
        pe.FastResampler(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="arrangement must be"):
        pe.FastResampler(pe.PerceiverResampler(pe.ResamplerConfig.tiny()), arrangement="fastest")
    with pytest.raises(ValueError, match="QK-norm's LayerNorm on k is not linear"):
        pe.FastResampler(pe.PerceiverResampler(pe.ResamplerConfig.tiny(qk_norm=True)), arrangement="absorbed")


def test_unsupported_configs_fall_back_and_say_so():
    assert fast_path_support(pe.ResamplerConfig.idefics()) is None
    assert fast_path_support(pe.ResamplerConfig.tiny(qk_norm=True, latents_in_kv=False)) is None
    assert "norm='rms'" in fast_path_support(pe.ResamplerConfig.idefics2(embed_dim=32, n_heads=4, head_dim=8))
    for field, value in [
        ("mlp", "swiglu"),
        ("mlp", "gelu"),
        ("n_kv_heads", 2),
        ("n_media_embeds", 3),
        ("accepts_mask", True),
    ]:
        assert field in fast_path_support(pe.ResamplerConfig.tiny(**{field: value}))
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny(norm="rms"))  # an Idefics2-like norm
    fast = pe.FastResampler(model)
    assert fast.fallback_reason and "fallback to the step model" in repr(fast)
    context = torch.randn(1, 5, 32)
    with pytest.warns(UserWarning, match="falls back to the step model: norm='rms'"):
        got = fast(context)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning comes once, not on every call
        fast(context)
    torch.testing.assert_close(got, model(context))


# -- the cost formulas, held to PyTorch's own FLOP counter -------------------------------------
def counted_flops(fn, *args) -> int:
    """PyTorch's count. The weights must be frozen (requires_grad_(False)): the counter follows modules
    with autograd hooks, which refuse no_grad."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


@pytest.mark.parametrize("qk_norm, latents_in_kv", [(False, True), (True, True), (False, False)])
@pytest.mark.parametrize("b, s", [(1, 17), (3, 50)])
def test_flop_formulas_match_the_flop_counter(b, s, qk_norm, latents_in_kv, perturbed):
    """A wrong factor, a missing step or a wrong n = s + l would make these differ."""
    config = pe.ResamplerConfig(
        embed_dim=40, depth=3, n_heads=5, head_dim=12, n_latents=7, qk_norm=qk_norm, latents_in_kv=latents_in_kv
    )
    model = perturbed(config).requires_grad_(False)
    context = torch.randn(b, s, 40)
    assert counted_flops(model, context) == cost.total_flops(config, b, s, "standard")
    arrangements = ("standard",) if qk_norm else ("standard", "absorbed")
    for arrangement in arrangements:
        fast = pe.FastResampler(model, arrangement, sdpa=False)
        fast(
            context
        )  # build the folded weights and the first layer's latent products first: once per weight change, not part of a call
        assert counted_flops(fast, context) == cost.total_flops(config, b, s, arrangement, cached_first_layer=True)
        with torch.no_grad():  # the buffered path: the absorbed arrangement pads the keys to a multiple of 16
            assert counted_flops(fast, context) == cost.total_flops(
                config, b, s, arrangement, cached_first_layer=True, padded=arrangement == "absorbed"
            )


def test_padding_keys_changes_the_flops_not_the_result(perturbed):
    """n = 17 + 7 = 24 keys are padded to 32: more FLOPs by exactly that factor, the same output."""
    config = pe.ResamplerConfig(embed_dim=40, depth=2, n_heads=5, head_dim=12, n_latents=7)
    assert (cost.padded_keys(24), cost.padded_keys(32), cost.padded_keys(33)) == (32, 32, 48)
    unpadded = cost.step_flops(config, 2, 17, "absorbed")
    padded = cost.step_flops(config, 2, 17, "absorbed", padded=True)
    assert padded["scores q.k"] * 24 == unpadded["scores q.k"] * 32
    assert padded["weighted sum attn.v"] * 24 == unpadded["weighted sum attn.v"] * 32
    assert padded["mlp (fc, c_proj)"] == unpadded["mlp (fc, c_proj)"]
    model = perturbed(config)
    fast = pe.FastResampler(model, "absorbed")
    context = torch.randn(2, 17, 40)
    with torch.no_grad():
        torch.testing.assert_close(fast(context), model(context), atol=1e-5, rtol=0)
        assert fast.workspace_bytes() == 4 * (
            2 * 5 * 7 * 40 + 2 * 5 * 7 * 32 + 2 * 32 * 40 + 2 * 5 * 7 * 12
        )  # u, scores, keys, heads
    torch.testing.assert_close(
        fast(context), model(context), atol=1e-5, rtol=0
    )  # with gradients: no padding, no buffers


@pytest.mark.parametrize("device", DEVICES)
def test_gpu_check_fast_path_runs(device):
    """benchmarks/gpu_check.py's FastResampler check, the code that prints the GPU figures, on a small model."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    r = gpu_check.fast_path_on(device, repeats=2, config=pe.ResamplerConfig.tiny(depth=2), s=40)
    assert r["diff"] < 1e-5 and r["step_ms"] > 0 and r["fast_ms"] > 0
    # half precision: a few parts in a thousand, not nothing (it is really run in low precision) and not garbage
    assert set(r["errors"]) == {"float16", "bfloat16"}
    assert 0 < r["errors"]["float16"] < r["errors"]["bfloat16"] < 0.2


def test_absorbed_buffers_follow_a_change_of_sdpa(perturbed):
    """With SDPA the absorbed arrangement keeps no scores buffer; switching sdpa off afterwards makes one."""
    model = perturbed(pe.ResamplerConfig(embed_dim=48, depth=2, n_heads=4, head_dim=12, n_latents=5))
    fast = pe.FastResampler(model, "absorbed", sdpa=True)
    context = torch.randn(2, 30, 48)
    with torch.no_grad():
        torch.testing.assert_close(fast(context), model(context), atol=1e-5, rtol=0)
        with_sdpa = fast.workspace_bytes()
        fast.sdpa = False
        torch.testing.assert_close(fast(context), model(context), atol=1e-5, rtol=0)
    assert fast.workspace_bytes() - with_sdpa == 4 * 2 * 4 * 5 * 48  # scores [b, h l, 35 keys padded to 48]
