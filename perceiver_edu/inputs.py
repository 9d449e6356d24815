"""Contexts to feed the resampler: random, structured, and real image patches.

Random context makes random-looking maps. The other two give the attention something to find:
`structured_context` hides a few distinctive tokens among near-identical background tokens, and
`image_context` cuts a real photograph (one that ships with scikit-learn, no download) into a
16 x 16 grid of patches plus a CLS token: 257 tokens, the shape of one image in IDEFICS.
Everything is seeded, so the same call gives the same tensor on every machine. The generator's
seed is derived from the seed *and* the kind (`input_generator`), so `make_context(kind, seed=k)`
never replays the numbers `torch.manual_seed(k)` hands to a model's weights: a context and a
model built from the same seed are independent.
"""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np
import torch
from einops import rearrange, reduce
from torch import Tensor

INPUT_KINDS = ("random", "structured", "image")
PATCH_SIZE = 14  # ViT-H/14, as in IDEFICS: 224 px -> 16 x 16 patches


def input_generator(kind: str, seed: int) -> torch.Generator:
    """A torch generator seeded from (seed, kind), never from the seed alone.

    torch.manual_seed(k) builds a model's weights from the stream that seed k starts. A context
    drawn from that same stream would repeat the weights' numbers (the first context token would
    equal the first latent). Hashing the kind into the seed gives every (seed, kind) its own stream.
    """
    digest = hashlib.sha256(f"perceiver_edu.inputs/{kind}/{int(seed)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)  # 63 bits: a valid seed


def random_context(batch: int = 1, context_length: int = 257, embed_dim: int = 64, seed: int = 0) -> Tensor:
    """[b, s, e] standard-normal tokens: no structure for the attention to find."""
    g = input_generator("random", seed)
    return torch.randn(batch, context_length, embed_dim, generator=g)


def distinctive_positions(context_length: int, n_distinctive: int = 4) -> list[int]:
    """The token positions `structured_context` makes distinctive: spread evenly over the context."""
    n = min(n_distinctive, context_length)
    return [int((i + 0.5) * context_length / n) for i in range(n)]


def structured_context(
    batch: int = 1, context_length: int = 257, embed_dim: int = 64, seed: int = 0, n_distinctive: int = 4
) -> Tensor:
    """[b, s, e] near-identical background tokens with a few distinctive tokens among them.

    The background is one shared vector plus a little noise, so after the LayerNorm every
    background token gets almost the same key: a latent's attention over them is flat. The
    distinctive tokens (at `distinctive_positions`) point in their own directions and stand out
    as bright or dark columns in the attention maps.
    """
    g = input_generator("structured", seed)
    background = torch.randn(embed_dim, generator=g)
    context = background + 0.1 * torch.randn(batch, context_length, embed_dim, generator=g)
    for pos in distinctive_positions(context_length, n_distinctive):
        context[:, pos] = 3.0 * torch.randn(embed_dim, generator=g)
    return context


def grid_side(context_length: int) -> int:
    """g for a context of g * g patches + 1 CLS token (257 -> 16); a clear error for other lengths."""
    side = math.isqrt(max(context_length - 1, 0))
    if context_length < 2 or side * side + 1 != context_length:
        below, above = side * side + 1, (side + 1) ** 2 + 1
        valid = [v for v in (below, above) if v >= 2]
        raise ValueError(
            f"context_length must be a square number of patches plus one CLS token (g*g + 1, e.g. 65, 145, 257) "
            f"for image input; got {context_length}. The nearest valid lengths are {valid}"
        )
    return side


def sample_image(side: int = 16) -> np.ndarray:
    """[side*14, side*14, 3] floats in [0, 1]: the centre square of scikit-learn's 'china.jpg', resized."""
    return _sample_image(side).copy()  # a copy: a caller may draw on it


@functools.lru_cache(maxsize=8)
def _sample_image(side: int) -> np.ndarray:
    # decoding the JPEG takes longer than a forward pass: the explorer asks for it on every change
    from sklearn.datasets import load_sample_image

    image = torch.tensor(load_sample_image("china.jpg"), dtype=torch.float32) / 255  # [427, 640, 3]
    height, width = image.shape[:2]
    crop = min(height, width)
    top, left = (height - crop) // 2, (width - crop) // 2
    image = rearrange(image[top : top + crop, left : left + crop], "h w c -> 1 c h w")
    size = side * PATCH_SIZE
    image = torch.nn.functional.interpolate(
        image, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return rearrange(image, "1 c h w -> h w c").clamp(0, 1).numpy()


POOL = 2  # each patch is described by the mean colour of its 2 x 2 quarters: 12 numbers


def image_context(batch: int = 1, context_length: int = 257, embed_dim: int = 64, seed: int = 0) -> Tensor:
    """[b, s, e] a real photo as tokens: token 0 is the CLS token, tokens 1..g*g the patches row by row.

    A stand-in for the ViT (seeded, no training): each 14 x 14 patch is described by the mean
    colour of its four quarters (12 numbers, each standardised over the patches), and a fixed
    random projection maps these to e features. Patches that look alike at a glance (sky, water,
    the dark roof) therefore get similar tokens, and a latent that matches one of them matches the
    whole region: attention maps show regions rather than single pixels of texture.

    The CLS token describes the whole image the way a token describes a patch: the mean colour of
    the image's four quarters (top-left, top-right, bottom-left, bottom-right), standardised with
    the patches' statistics and projected like them. It is a coarse summary of the layout (sky at
    the top, dark water at the bottom), close to the patches' average but not equal to any patch.
    (A real ViT's CLS token is a learned extra token that its layers fill with a summary of the
    image; this one is a fixed stand-in with the same role.) It is not the mean of the patch
    tokens: that mean is exactly zero after the standardisation, which would make CLS a blank token.
    """
    side = grid_side(context_length)
    image = torch.from_numpy(sample_image(side))  # [g*14, g*14, 3]
    quarter = PATCH_SIZE // POOL
    patches = reduce(
        image, "(gh qh ph) (gw qw pw) c -> (gh gw) (qh qw c)", "mean", qh=POOL, qw=POOL, ph=quarter, pw=quarter
    )  # [g*g, 12]
    whole = reduce(
        image, "(qh ph) (qw pw) c -> 1 (qh qw c)", "mean", qh=POOL, qw=POOL
    )  # [1, 12]: the image as one patch
    mean, std = (
        patches.mean(dim=0),
        patches.std(dim=0, correction=0).clamp_min(1e-6),
    )  # clamp: one patch, or a flat colour
    features = (torch.cat([whole, patches]) - mean) / std  # [1 + g*g, 12]: CLS first, standardised with the patches
    g = input_generator("image", seed)
    projection = torch.randn(features.shape[1], embed_dim, generator=g) / math.sqrt(features.shape[1])
    tokens = features @ projection  # [1 + g*g, e]
    return tokens.expand(batch, -1, -1).clone()


def make_context(kind: str, batch: int = 1, context_length: int = 257, embed_dim: int = 64, seed: int = 0) -> Tensor:
    """[b, s, e] context of the given kind: 'random', 'structured' or 'image'.

    The numbers come from `input_generator(kind, seed)`: the same seed as the model's weights is
    fine, no "seed + 1" needed.
    """
    makers = {"random": random_context, "structured": structured_context, "image": image_context}
    if kind not in makers:
        raise ValueError(f"kind must be one of {list(INPUT_KINDS)}; got {kind!r}")
    return makers[kind](batch=batch, context_length=context_length, embed_dim=embed_dim, seed=seed)
