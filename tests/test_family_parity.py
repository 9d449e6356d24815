"""Same weights, same outputs: flamingo-pytorch, OpenFlamingo and Idefics2, in both directions, at 1e-5.

Each reference is built from its own constructor (nothing is downloaded) with sizes drawn from a
seeded generator: heads, head dims, k/v heads, depth 1-6, latents, batch 1-4, context 1-300, media and
frames 1-4, padding masks of different lengths per example. "Theirs -> ours" copies a reference's
weights with `from_x`; "ours -> theirs" loads `to_x(ours)` into a fresh reference with
strict=True. IDEFICS has its own file, test_idefics_parity.py.
"""

from __future__ import annotations

import random

import pytest
import torch

import perceiver_edu as pe
from perceiver_edu.interop.open_flamingo import load_helpers

N_CONFIGS = 8  # per reference and direction
# the first two configurations of each reference run in the fast loop, the others are marked slow
SEEDS = [seed if seed < 2 else pytest.param(seed, marks=pytest.mark.slow) for seed in range(N_CONFIGS)]
ATOL = RTOL = 1e-5


# Each reference is a fixture that skips only the tests needing it when it is not installed.
@pytest.fixture(scope="module")
def flamingo_pytorch():
    return pytest.importorskip("flamingo_pytorch")


@pytest.fixture(scope="module")
def idefics2():
    return pytest.importorskip("transformers.models.idefics2.modeling_idefics2")


@pytest.fixture(scope="module")
def helpers():
    try:
        return load_helpers()
    except ImportError as err:
        pytest.skip(str(err))


def perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Norm weights start at 1 (biases at 0) and Idefics2's latents at ones: move every parameter a little,
    so that a swapped or forgotten weight shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return module.eval()


def sizes(seed: int) -> dict:
    r = random.Random(seed)
    n_heads = r.choice([1, 2, 3, 4, 6, 8])
    return dict(
        n_heads=n_heads,
        n_kv_heads=r.choice([d for d in range(1, n_heads + 1) if n_heads % d == 0]),
        head_dim=r.choice([4, 8, 12, 16]),
        depth=r.randint(1, 6),
        n_latents=r.randint(1, 12),
        embed_dim=r.choice([8, 16, 24, 32]),
        batch=r.randint(1, 4),
        context=r.choice([1, 2, r.randint(3, 64), r.randint(65, 300)]),
        media=r.randint(1, 4),
        frames=r.randint(1, 4),
        rng=r,
    )


# -- the references, built from their constructors -------------------------------------------------


def lucidrains(flamingo_pytorch, z, n_media_embeds):
    return flamingo_pytorch.PerceiverResampler(
        dim=z["embed_dim"],
        depth=z["depth"],
        dim_head=z["head_dim"],
        heads=z["n_heads"],
        num_latents=z["n_latents"],
        num_media_embeds=n_media_embeds,
    )


def open_flamingo(helpers, z, max_media, max_frames):
    return helpers.PerceiverResampler(
        dim=z["embed_dim"],
        depth=z["depth"],
        dim_head=z["head_dim"],
        heads=z["n_heads"],
        num_latents=z["n_latents"],
        max_num_media=max_media,
        max_num_frames=max_frames,
    )


def hf_idefics2(idefics2, z, attn="sdpa"):
    from transformers.models.idefics2.configuration_idefics2 import Idefics2PerceiverConfig

    config = Idefics2PerceiverConfig(
        hidden_size=z["embed_dim"],
        resampler_depth=z["depth"],
        resampler_n_heads=z["n_heads"],
        resampler_head_dim=z["head_dim"],
        resampler_n_latents=z["n_latents"],
        num_key_value_heads=z["n_kv_heads"],
    )
    config._attn_implementation = attn
    return idefics2.Idefics2PerceiverResampler(config)


def padding_mask(z) -> torch.Tensor:
    """[b, s]: example i has a random number of real tokens (at least one), the rest padding."""
    mask = torch.zeros(z["batch"], z["context"], dtype=torch.long)
    for i in range(z["batch"]):
        mask[i, : z["rng"].randint(1, z["context"])] = 1
    return mask


def close(ours, theirs):
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=RTOL)


# -- flamingo-pytorch ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_flamingo_pytorch_both_ways(flamingo_pytorch, seed):
    z = sizes(100 + seed)
    torch.manual_seed(seed)
    theirs = perturb(lucidrains(flamingo_pytorch, z, n_media_embeds=z["media"]), seed)
    x = torch.randn(z["batch"], z["media"], z["context"], z["embed_dim"])  # [b, m, s, e]
    ours = pe.interop.from_flamingo_pytorch(theirs)
    assert ours.config.mlp == "gelu" and ours.config.n_media_embeds == z["media"]
    with torch.no_grad():
        close(ours(x), theirs(x))  # [b, m, l, e]
        # [b, s, e] is one media: theirs returns [b, 1, l, e], ours [b, l, e]
        close(ours(x[:, 0]), theirs(x[:, 0])[:, 0])

    # ours -> theirs: a fresh reference of the same sizes, strict loading
    mine = perturb(pe.PerceiverResampler(ours.config), seed + 1)
    fresh = lucidrains(flamingo_pytorch, z, n_media_embeds=z["media"]).eval()
    fresh.load_state_dict(pe.interop.to_flamingo_pytorch(mine), strict=True)
    with torch.no_grad():
        close(mine(x), fresh(x))


# -- OpenFlamingo -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_open_flamingo_both_ways(helpers, seed):
    z = sizes(200 + seed)
    # every combination of the two optional embeddings appears over the seeds
    max_media = z["media"] + 1 if seed % 2 else None
    max_frames = z["frames"] if seed % 4 < 2 else None
    torch.manual_seed(seed)
    theirs = perturb(open_flamingo(helpers, z, max_media, max_frames), seed)
    context = max(1, z["context"] // z["frames"])
    x = torch.randn(z["batch"], z["media"], z["frames"], context, z["embed_dim"])  # [b, T, F, v, e]
    ours = pe.interop.from_open_flamingo(theirs)
    assert (ours.config.n_media_embeds, ours.config.n_frame_embeds) == (max_media or 0, max_frames or 0)
    with torch.no_grad():
        close(ours(x), theirs(x))  # [b, T, l, e]

    mine = perturb(pe.PerceiverResampler(ours.config), seed + 1)
    fresh = open_flamingo(helpers, z, max_media, max_frames).eval()
    fresh.load_state_dict(pe.interop.to_open_flamingo(mine), strict=True)
    with torch.no_grad():
        close(mine(x), fresh(x))


# -- Idefics2 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_idefics2_both_ways_with_padding_masks(idefics2, seed):
    z = sizes(300 + seed)
    torch.manual_seed(seed)
    theirs = perturb(hf_idefics2(idefics2, z, attn="eager" if seed % 2 else "sdpa"), seed)
    context = torch.randn(z["batch"], z["context"], z["embed_dim"])
    mask = padding_mask(z)
    ours = pe.interop.from_idefics2(theirs)
    expected_kv = None if z["n_kv_heads"] == z["n_heads"] else z["n_kv_heads"]
    assert (ours.config.norm, ours.config.mlp, ours.config.n_kv_heads) == ("rms", "swiglu", expected_kv)
    with torch.no_grad():
        close(ours(context, attention_mask=mask), theirs(context, attention_mask=mask))
        everything = torch.ones_like(mask)
        close(ours(context), theirs(context, attention_mask=everything))  # no mask = no padding

    mine = perturb(pe.PerceiverResampler(ours.config), seed + 1)
    fresh = hf_idefics2(idefics2, z).eval()
    fresh.load_state_dict(pe.interop.to_idefics2(mine), strict=True)
    with torch.no_grad():
        close(mine(context, attention_mask=mask), fresh(context, attention_mask=mask))


def test_the_random_configurations_cover_what_the_issue_lists():
    drawn = [sizes(base + seed) for base in (100, 200, 300) for seed in range(N_CONFIGS)]
    assert {z["depth"] for z in drawn} >= {1, 6} or len({z["depth"] for z in drawn}) >= 5
    assert any(z["n_kv_heads"] < z["n_heads"] for z in drawn[2 * N_CONFIGS :])  # grouped-query in Idefics2's draws
    assert min(z["context"] for z in drawn) == 1 and max(z["context"] for z in drawn) > 64
    assert {z["batch"] for z in drawn} == {1, 2, 3, 4}
    assert {z["media"] for z in drawn} == {1, 2, 3, 4}
