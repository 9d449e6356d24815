"""The cost formulas (cost.py), held to PyTorch's own FLOP counter for every preset, and the memory meter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import perceiver_edu as pe
from perceiver_edu import cost, measure

PRESETS = ("idefics", "idefics2", "flamingo", "tiny")


def counted(config, context, **kwargs) -> int:
    """PyTorch's count of one forward pass of the step model, on the meta device: shapes only, no numbers
    (so the full-size presets cost nothing to count)."""
    with torch.device("meta"):
        model = pe.PerceiverResampler(config).requires_grad_(False)
    model.check_finite = False  # the finite check reads values, which meta tensors do not have
    with FlopCounterMode(display=False) as counter:
        model(context.to("meta"), **kwargs)
    return counter.get_total_flops()


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("b, s", [(1, 257), (3, 50)])
def test_the_formulas_match_the_flop_counter_for_every_preset(preset, b, s):
    """Idefics2's grouped-query k/v and three-matrix SwiGLU, Flamingo's GELU: a formula that counted
    IDEFICS' arithmetic for every config would miss here."""
    config = getattr(pe.ResamplerConfig, preset)()
    context = torch.empty(b, s, config.embed_dim, device="meta")
    assert counted(config, context) == cost.total_flops(config, b, s)


def test_grouped_query_and_swiglu_change_the_count_as_the_formulas_say():
    config = pe.ResamplerConfig.idefics2()
    flops = cost.step_flops(config, 1, 257)
    # k_proj and v_proj are g d = 4 * 96 wide, not h d = 16 * 96; the MLP has three e x 4e matrices
    assert flops["k_proj, v_proj (context)"] == 3 * 2 * 2 * 257 * 4096 * 4 * 96
    assert flops["mlp (gate_proj, up_proj, down_proj)"] == 3 * 3 * 2 * 64 * 4096 * 4 * 4096
    assert cost.step_formulas(config)["k_proj, v_proj (context)"] == "2 * 2 b s e g d"
    assert cost.step_formulas(config)["mlp (gate_proj, up_proj, down_proj)"] == "3 * 2 b l e 4e"
    assert cost.step_formulas(pe.ResamplerConfig.idefics()) == cost.STEP_FORMULAS["standard"]
    assert set(cost.step_formulas(config, "absorbed")) == set(cost.step_flops(config, 1, 5, "absorbed"))


def test_media_and_frames_count_as_examples_of_their_tokens():
    """[b, m, s, e] is m contexts of s tokens; [b, m, f, v, e] is m contexts of f v tokens."""
    media = pe.ResamplerConfig.flamingo(n_media_embeds=4)
    assert counted(media, torch.empty(2, 3, 50, 1024)) == cost.total_flops(media, 2 * 3, 50)
    frames = pe.ResamplerConfig.flamingo(n_media_embeds=2, n_frame_embeds=3)
    assert counted(frames, torch.empty(2, 2, 3, 10, 1024)) == cost.total_flops(frames, 2 * 2, 3 * 10)


def test_a_padding_mask_does_not_change_the_count():
    config = pe.ResamplerConfig.idefics2(embed_dim=64, head_dim=8)
    context = torch.randn(2, 30, 64)
    mask = torch.ones(2, 30)
    mask[1, 20:] = 0  # masked keys are still multiplied, then given zero weight
    with FlopCounterMode(display=False) as counter:
        pe.PerceiverResampler(config).requires_grad_(False)(context, attention_mask=mask)
    assert counter.get_total_flops() == cost.total_flops(config, 2, 30)


def test_step_memory_follows_the_kv_heads_and_the_mlp():
    idefics, idefics2 = pe.ResamplerConfig.idefics(), pe.ResamplerConfig.idefics2()
    assert cost.step_memory(idefics, 1, 257)["k, v"] == 2 * 321 * 16 * 96
    assert cost.step_memory(idefics2, 1, 257)["k, v"] == 2 * 321 * 4 * 96
    assert cost.step_memory(idefics2, 1, 257)["mlp hidden"] == 2 * 64 * 4 * 4096


def test_cost_keeps_the_measuring_names_chapter_6_calls():
    assert cost.peak_memory is measure.peak_memory and cost.time_interleaved is measure.time_interleaved


def test_step_flops_names_each_product():
    config = pe.ResamplerConfig.idefics()
    flops = cost.step_flops(config, 1, 257)
    # the context's k/v projections: 2 products of [257, 1280] @ [1280, 1536] in each of 6 layers
    assert flops["k_proj, v_proj (context)"] == 6 * 2 * 2 * 257 * 1280 * 1536
    assert flops["mlp (fc, c_proj)"] == 6 * 2 * 2 * 64 * 1280 * 5120
    assert cost.cheaper_arrangement(config, 1, 257) == "absorbed"
    assert cost.cheaper_arrangement(config.replace(qk_norm=True), 1, 4096) == "standard"
    # with many latents (l > d) projecting the context is cheaper than meeting it in embedding space
    assert cost.cheaper_arrangement(config.replace(n_latents=512), 1, 257) == "standard"
    with pytest.raises(ValueError, match="not linear"):
        cost.step_flops(config.replace(qk_norm=True), 1, 257, "absorbed")


def test_peak_memory_counts_what_is_allocated():
    a = torch.randn(256, 256)
    # a @ a then relu: two 256 x 256 float32 results alive at once, views and inputs not counted
    assert measure.peak_memory(lambda: (a @ a).relu().view(-1)) == 2 * 256 * 256 * 4
    assert measure.peak_memory(lambda: a.view(-1).t()) == 0


def test_lm_cross_attention_grows_with_the_visual_tokens():
    few = cost.lm_cross_attention_flops(n_text=100, n_visual=64, lm_dim=4096, n_layers=8, visual_dim=1280)
    many = cost.lm_cross_attention_flops(n_text=100, n_visual=257, lm_dim=4096, n_layers=8, visual_dim=1280)
    per_token = 8 * (2 * 2 * 1280 * 4096 + 2 * 2 * 100 * 4096)  # k, v of one more visual token + its scores/sum
    assert many - few == (257 - 64) * per_token
    assert cost.tokens_per_image(257, 64) == 64 and cost.tokens_per_image(257, 64, resampler=False) == 257
