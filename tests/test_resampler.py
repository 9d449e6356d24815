"""The package on its own: shapes, the trace, the config, the steps as the modules use them."""

import pytest
import torch

import perceiver_edu as pe
from perceiver_edu import steps


def make(seed=0, **overrides):
    torch.manual_seed(seed)
    return pe.PerceiverResampler(pe.ResamplerConfig.tiny(**overrides))


def test_output_shape_and_trace_shapes():
    model = make()
    context = torch.randn(3, 20, 32)
    latents, trace = model(context, return_trace=True)
    cfg = model.config
    assert latents.shape == (3, cfg.n_latents, cfg.embed_dim)
    assert len(trace.attentions) == len(trace.scores) == len(trace.latents) == cfg.depth
    for attn, scores, lat in zip(trace.attentions, trace.scores, trace.latents):
        assert attn.shape == scores.shape == (3, cfg.n_heads, cfg.n_latents, 20 + cfg.n_latents)
        assert lat.shape == (3, cfg.n_latents, cfg.embed_dim)
    assert trace.context_length == 20 and trace.n_keys == 20 + cfg.n_latents


def test_attention_rows_sum_to_one_and_match_softmax_of_scores():
    model = make(qk_norm=True)
    _, trace = model(torch.randn(2, 33, 32), return_trace=True)
    for attn, scores in zip(trace.attentions, trace.scores):
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
        torch.testing.assert_close(attn, scores.softmax(-1))


def test_trace_does_not_change_the_output_and_nothing_is_kept_without_it():
    model = make()
    context = torch.randn(2, 17, 32)
    plain = model(context)
    traced, trace = model(context, return_trace=True)
    assert isinstance(plain, torch.Tensor)
    assert torch.equal(plain, traced)
    assert all(not t.requires_grad for t in trace.attentions + trace.scores + trace.latents)


def test_last_traced_latents_are_the_output_before_the_final_layer_norm():
    model = make()
    out, trace = model(torch.randn(1, 9, 32), return_trace=True)
    ln = model.layer_norm
    torch.testing.assert_close(out, steps.layer_norm(trace.latents[-1], ln.weight, ln.bias))


def test_latents_out_of_kv_gives_plain_cross_attention_over_the_context():
    model = make(latents_in_kv=False)
    latents, trace = model(torch.randn(2, 11, 32), return_trace=True)
    assert trace.attentions[0].shape[-1] == 11
    assert not trace.latents_in_kv
    torch.testing.assert_close(trace.context_share(), torch.ones_like(trace.context_share()))


def test_latents_in_kv_changes_the_result():
    context = torch.randn(1, 11, 32)
    with_latents = make(seed=1)(context)
    without = make(seed=1, latents_in_kv=False)(context)
    assert not torch.allclose(with_latents, without)


def test_empty_context_lets_latents_attend_to_themselves_only():
    model = make()
    latents, trace = model(torch.zeros(2, 0, 32), return_trace=True)
    assert latents.shape == (2, 8, 32) and torch.isfinite(latents).all()
    assert trace.attentions[0].shape[-1] == 8
    assert float(trace.context_share().abs().max()) == 0.0


def test_permutation_invariance_over_context_tokens():
    model = make()
    context = torch.randn(2, 30, 32)
    perm = torch.randperm(30)
    torch.testing.assert_close(model(context), model(context[:, perm]), atol=1e-5, rtol=1e-5)


def test_gradients_flow_to_every_parameter():
    model = make(qk_norm=True)
    model(torch.randn(2, 5, 32)).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_stable_softmax_survives_float16_overflow():
    scores = torch.tensor([[12.0, 11.0, 0.0]], dtype=torch.float16)
    naive = scores.exp() / scores.exp().sum(-1, keepdim=True)
    assert not torch.isfinite(naive).all()  # exp(12) > 65504, the float16 maximum
    stable = steps.stable_softmax(scores)
    torch.testing.assert_close(stable.float(), scores.float().softmax(-1), atol=1e-3, rtol=1e-3)


def test_split_and_merge_heads_are_inverse():
    x = torch.randn(2, 7, 4 * 8)
    heads = steps.split_heads(x, 4)
    assert heads.shape == (2, 4, 7, 8)
    torch.testing.assert_close(heads[:, 1], x[..., 8:16])
    torch.testing.assert_close(steps.merge_heads(heads), x)


def test_entropy_and_share_helpers():
    uniform = torch.full((1, 1, 2, 10), 0.1)
    torch.testing.assert_close(
        pe.attention_entropy(uniform), torch.full((1, 1, 2), torch.log(torch.tensor(10.0)).item())
    )
    one_hot = torch.zeros(1, 1, 2, 10)
    one_hot[..., 3] = 1
    torch.testing.assert_close(pe.attention_entropy(one_hot), torch.zeros(1, 1, 2))
    torch.testing.assert_close(pe.context_share(one_hot, 4), torch.ones(1, 1, 2))
    torch.testing.assert_close(pe.context_share(one_hot, 3), torch.zeros(1, 1, 2))


def test_presets_and_replace():
    cfg = pe.ResamplerConfig.idefics()
    assert (cfg.embed_dim, cfg.depth, cfg.n_heads, cfg.head_dim, cfg.n_latents, cfg.qk_norm) == (
        1280,
        6,
        16,
        96,
        64,
        False,
    )
    assert cfg.replace(depth=2).depth == 2 and cfg.depth == 6
    assert pe.ResamplerConfig.tiny(qk_norm=True).qk_norm
    model = pe.PerceiverResampler(cfg.replace(embed_dim=64, depth=1, n_heads=2, head_dim=8, n_latents=4), depth=3)
    assert len(model.blocks) == 3


def test_step_functions_are_what_the_modules_run():
    """Composing the steps by hand gives exactly the module's output (no hidden second implementation)."""
    model = make(qk_norm=True)
    context = torch.randn(2, 13, 32)
    cfg = model.config
    latents = steps.repeat_latents(model.latents, 2)
    for attention, ff in model.blocks:
        c = steps.layer_norm(context, attention.context_layer_norm.weight, attention.context_layer_norm.bias)
        x = steps.layer_norm(latents, attention.latents_layer_norm.weight, attention.latents_layer_norm.bias)
        kv = steps.join_latents(c, x)
        q = steps.split_heads(steps.project(x, attention.q_proj.weight), cfg.n_heads)
        k = steps.split_heads(steps.project(kv, attention.k_proj.weight), cfg.n_heads)
        v = steps.split_heads(steps.project(kv, attention.v_proj.weight), cfg.n_heads)
        q = steps.layer_norm(q, attention.q_layer_norm.weight, attention.q_layer_norm.bias)
        k = steps.layer_norm(k, attention.k_layer_norm.weight, attention.k_layer_norm.bias)
        out = steps.merge_heads(steps.weighted_sum(steps.stable_softmax(steps.attention_scores(q, k)), v))
        latents = steps.add_residual(latents, steps.project(out, attention.output_proj.weight))
        h = steps.layer_norm(latents, ff.ln.weight, ff.ln.bias)
        latents = steps.add_residual(latents, steps.relu_mlp(h, ff.fc.weight, ff.c_proj.weight))
    by_hand = steps.layer_norm(latents, model.layer_norm.weight, model.layer_norm.bias)
    assert torch.equal(by_hand, model(context))


@pytest.mark.parametrize("kind", pe.INPUT_KINDS)
def test_make_context_is_seeded(kind):
    a = pe.make_context(kind, batch=2, context_length=65, embed_dim=16, seed=3)
    b = pe.make_context(kind, batch=2, context_length=65, embed_dim=16, seed=3)
    assert a.shape == (2, 65, 16) and torch.equal(a, b)


def test_scale_qk_multiplies_every_score_by_gain_squared():
    model = make()
    context = torch.randn(1, 9, 32)
    _, before = model(context, return_trace=True)
    pe.scale_qk_(model, 3.0)
    _, after = model(context, return_trace=True)
    torch.testing.assert_close(after.scores[0], 9.0 * before.scores[0], atol=1e-4, rtol=1e-4)
    assert after.entropy().mean() < before.entropy().mean()  # sharper attention
