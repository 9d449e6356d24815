"""What a forward pass records for teaching, and the two numbers learners read off it.

`model(context, return_trace=True)` returns a `Trace` next to the output: per layer the attention
weights, the scores before the softmax, and the latents after the block.

The media axis (Flamingo's [b, m, s, e], OpenFlamingo's [b, m, f, v, e]): each media is resampled on
its own, so it is folded into the batch axis, example-major: row j * m + i of every tensor here is
media i of example j (`n_media` says m; `by_media` unfolds it). With a padding mask (Idefics2) the
padding keys' attention is exactly 0 and their `scores` are what q . k gave before the mask. Everything is detached,
so a trace never keeps the autograd graph alive; without `return_trace` nothing is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor


def context_share(attn: Tensor, context_length: int) -> Tensor:
    """[..., l, n] -> [..., l]: the part of each latent's attention that goes to the context (keys 0..s-1).

    With latents in the keys/values the rest, 1 - share, goes to the latents themselves. A
    latent that spreads its attention evenly would give the context s / (s + l) of it.
    """
    return attn[..., :context_length].sum(dim=-1)


def attention_entropy(attn: Tensor) -> Tensor:
    """[..., l, n] -> [..., l]: -sum p log p in nats; 0 = looks at one key, log(n) = looks at all equally."""
    p = attn.clamp_min(torch.finfo(attn.dtype).tiny)  # 0 log 0 = 0, without a NaN from log(0)
    return -(attn * p.log()).sum(dim=-1)


@dataclass(frozen=True)
class Trace:
    """What happened inside one forward pass (all tensors detached).

    attentions  tuple over layers of [b, h, l, n]: softmax weights, rows sum to 1; n = s + l
                (or n = s when the latents do not join the keys/values)
    scores      tuple over layers of [b, h, l, n]: q . k / sqrt(d), before the softmax
    latents     tuple over layers of [b, l, e]: the latents after each block (before the final LayerNorm)
    context_length  s, so that key j < s is a context token and key j >= s a latent
                (for media of f frames of v tokens, s = f * v, frame after frame)
    n_media     m: the batch axis above is (b m), media i of example j at row j * m + i (1 = no media axis)
    """

    attentions: tuple[Tensor, ...]
    scores: tuple[Tensor, ...]
    latents: tuple[Tensor, ...]
    context_length: int
    latents_in_kv: bool
    n_media: int = 1

    @property
    def depth(self) -> int:
        return len(self.attentions)

    @property
    def n_keys(self) -> int:
        """n: how many keys each latent attends over (s + l, or s without latents in kv)."""
        return self.attentions[0].shape[-1]

    def stacked(self) -> Tensor:
        """[depth, b, h, l, n]: all attention maps in one tensor."""
        return torch.stack(self.attentions)

    def by_media(self) -> Tensor:
        """[depth, b, m, h, l, n]: all attention maps, the media axis unfolded from the batch axis."""
        return rearrange(self.stacked(), "depth (b m) h l n -> depth b m h l n", m=self.n_media)

    def context_share(self) -> Tensor:
        """[depth, b, h, l]: the share of each latent's attention that goes to the context."""
        return context_share(self.stacked(), self.context_length)

    def entropy(self) -> Tensor:
        """[depth, b, h, l]: attention entropy in nats, per layer, head and latent."""
        return attention_entropy(self.stacked())

    def uniform_context_share(self) -> float:
        """s / n: the context share a latent would have if it attended to every key equally."""
        return self.context_length / self.n_keys if self.n_keys else float("nan")

    def max_entropy(self) -> float:
        """log(n): the entropy of uniform attention over all keys, the most a row can have."""
        return math.log(self.n_keys) if self.n_keys else 0.0


# -- where the latents look in the image: the context keys only -------------------------------


def image_attention(trace: Trace) -> Tensor:
    """[depth, b, h, l, s]: each latent's attention over the image pixels only, renormalised to sum to 1.

    The latents also attend to themselves (the keys after the context); dropping those keys and
    renormalising asks "of what it takes from the image, where does this latent look?".
    """
    pixels = trace.stacked()[..., : trace.context_length]  # [depth, b, h, l, s]
    return pixels / pixels.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(pixels.dtype).tiny)


def image_entropy(trace: Trace) -> Tensor:
    """[depth, b, h, l]: entropy (nats) of `image_attention`; log(s) is a flat look at every context token (4.16 for 64 pixels)."""
    return attention_entropy(image_attention(trace))


def latent_overlap(maps: Tensor) -> Tensor:
    """[..., l, s] -> [...]: how much two latents look at the same pixels, averaged over all pairs of latents.

    For two maps p and q (each summing to 1) the overlap is sum_j min(p_j, q_j): 1 when they are the
    same map, 0 when they look at disjoint pixels.
    """
    l = maps.shape[-2]
    if l < 2:
        raise ValueError(f"latent_overlap needs at least 2 latents to compare; got maps of shape {tuple(maps.shape)}")
    pairs = torch.minimum(maps[..., :, None, :], maps[..., None, :, :]).sum(-1)  # [..., l, l]
    off_diagonal = ~torch.eye(l, dtype=torch.bool, device=maps.device)
    return pairs[..., off_diagonal].mean(-1)
