"""inputs.py: seeded contexts that never replay the model's random numbers, and a CLS token with a value."""

import pytest
import torch

import perceiver_edu as pe
from perceiver_edu.inputs import input_generator


@pytest.mark.parametrize("kind", pe.INPUT_KINDS)
def test_context_does_not_replay_the_weights_stream(kind):
    """make_context(seed=k) and torch.manual_seed(k) must not hand out the same numbers."""
    torch.manual_seed(5)
    model = pe.PerceiverResampler(pe.ResamplerConfig(embed_dim=16, depth=1, n_heads=2, head_dim=8, n_latents=4))
    context = pe.make_context(kind, context_length=65, embed_dim=16, seed=5)
    for token in context[0]:
        for latent in model.latents:
            assert not torch.allclose(token, latent), "a context token is a copy of a latent"
    assert input_generator(kind, 5).initial_seed() != 5


def test_random_context_first_token_is_not_seed_k_first_draw():
    torch.manual_seed(3)
    first_draw = torch.randn(1, 1, 16)
    assert not torch.allclose(pe.make_context("random", context_length=4, embed_dim=16, seed=3)[:, :1], first_draw)


@pytest.mark.parametrize("kind", pe.INPUT_KINDS)
def test_seed_changes_the_context_and_repeats_it(kind):
    a = pe.make_context(kind, context_length=65, embed_dim=16, seed=1)
    assert torch.equal(a, pe.make_context(kind, context_length=65, embed_dim=16, seed=1))
    assert not torch.allclose(a, pe.make_context(kind, context_length=65, embed_dim=16, seed=2))


def test_kinds_draw_from_different_streams():
    assert input_generator("random", 0).initial_seed() != input_generator("structured", 0).initial_seed()
    assert input_generator("random", 0).initial_seed() != input_generator("random", 1).initial_seed()


def test_image_cls_token_has_a_real_value():
    context = pe.make_context("image", context_length=257, embed_dim=64)[0]  # [s, e]
    cls, patches = context[0], context[1:]
    # the mean of the standardised patches is exactly zero: CLS must not be that blank token
    assert patches.mean(dim=0).abs().max() < 1e-5
    assert cls.norm() > 0.2 * patches.norm(dim=-1).median()
    # a summary, not a copy of one patch
    assert (patches - cls).norm(dim=-1).min() > 1e-3
