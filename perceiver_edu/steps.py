"""The Perceiver Resampler, one step one function, in the order of the diagram in DESIGN.md.

    context [b, s, e]             latents [l, e] -> repeat_latents -> [b, l, e]
       |                               |
    layer_norm (context_layer_norm) layer_norm (latents_layer_norm)
       +----- join_latents ------------+   -> kv_input [b, n, e], n = s + l
    k, v = project(kv_input)        q = project(latents)
    split_heads                     split_heads            -> [b, h, n, d] / [b, h, l, d]
    (qk_norm: layer_norm over d on q and k)
    attention_scores -> stable_softmax -> weighted_sum -> merge_heads -> project (output_proj)
    add_residual, then mlp on layer_norm(latents), add_residual     (repeated `depth` times)
    layer_norm (final)  -> [b, l, e]

Every function is pure: tensors (and sizes) in, a tensor out. The nn.Modules in `modules.py` only
hold the weights and call these, so what you read here is exactly what runs.
Letters: b batch, s context length, l latents, h heads, d head dim, e embed dim, n keys (s + l).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor


def repeat_latents(latents: Tensor, batch_size: int) -> Tensor:
    """[l, e] -> [b, l, e]: every example in the batch starts from the same learned latents."""
    return repeat(latents, "l e -> b l e", b=batch_size)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """[..., f] -> [..., f]: zero mean, unit variance over the last axis, then a learned scale and shift.

    Used for context_layer_norm and latents_layer_norm (f = e), QK-norm (f = d), the MLP's `ln`
    and the final `layer_norm`.
    """
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def join_latents(context: Tensor, latents: Tensor) -> Tensor:
    """[b, s, e], [b, l, e] -> [b, s + l, e]: the Flamingo detail, latents join the keys/values.

    Without the join a latent's update mixes context values only: its own content steers where it
    looks (its query), but no latent ever reads another, so the latents are l independent readers.
    (Even when every latent gets the same update, the residual keeps them exactly as different as
    before; what is lost is an update specific to each latent, and any exchange between them.)
    With the join every latent's values are among the keys/values, so one attention both reads the
    context and lets the latents exchange information. The original Perceiver does that exchange
    in separate latent self-attention blocks; Flamingo folds it into the cross-attention.
    """
    return torch.cat([context, latents], dim=-2)


def project(x: Tensor, weight: Tensor) -> Tensor:
    """[b, n, f_in] -> [b, n, f_out]: x @ weight.T, a bias-free linear map (q_proj, k_proj, v_proj, output_proj)."""
    return F.linear(x, weight)


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """[b, n, (h d)] -> [b, h, n, d]: every head gets its own slice of the features."""
    return rearrange(x, "b n (h d) -> b h n d", h=n_heads)


def attention_scores(q: Tensor, k: Tensor) -> Tensor:
    """[b, h, l, d], [b, h, n, d] -> [b, h, l, n]: q . k / sqrt(d), how well each latent's query matches each key.

    Dividing by sqrt(d) keeps the scores' spread independent of the head width, so the softmax
    does not saturate as d grows. (q is scaled first, as IDEFICS does, so results match it exactly.)
    """
    scale = q.shape[-1] ** -0.5
    return torch.einsum("b h l d, b h n d -> b h l n", q * scale, k)


def stable_softmax(scores: Tensor) -> Tensor:
    """[b, h, l, n] -> [b, h, l, n]: softmax over the keys, after subtracting each row's max.

    softmax(x - c) = softmax(x) for any constant c, because exp(x - c) = exp(x) / exp(c) and the
    exp(c) cancels in the normalisation. With c = the row max the largest exponent is exp(0) = 1,
    so nothing overflows, even in float16 where exp(12) is already past the largest number.
    The max is detached: it does not change the result, so no gradient needs to flow through it.
    """
    stabilized = scores - scores.amax(dim=-1, keepdim=True).detach()
    return stabilized.softmax(dim=-1)


def weighted_sum(attn: Tensor, v: Tensor) -> Tensor:
    """[b, h, l, n], [b, h, n, d] -> [b, h, l, d]: each latent's new value is its attention-weighted mix of values."""
    return torch.einsum("b h l n, b h n d -> b h l d", attn, v)


def merge_heads(x: Tensor) -> Tensor:
    """[b, h, l, d] -> [b, l, (h d)]: put the heads side by side again."""
    return rearrange(x, "b h l d -> b l (h d)")


def add_residual(latents: Tensor, update: Tensor) -> Tensor:
    """[b, l, e] + [b, l, e]: a block adds to the latents rather than replacing them."""
    return latents + update


def mlp(x: Tensor, fc_weight: Tensor, c_proj_weight: Tensor) -> Tensor:
    """[b, l, e] -> [b, l, 4e] -> [b, l, e]: Linear, ReLU, Linear, bias-free (IDEFICS' `fc` and `c_proj`).

    Applied to each latent on its own: attention mixes tokens, the MLP transforms each one.
    """
    return project(F.relu(project(x, fc_weight)), c_proj_weight)
