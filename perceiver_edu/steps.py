"""The Perceiver Resampler, one step one function, in the order of the diagram in docs/design.md.

    context [b, s, e]             latents [l, e] -> repeat_latents -> [b, l, e]
       |                               |
    layer_norm (context_layer_norm) layer_norm (latents_layer_norm)
       +----- join_latents ------------+   -> kv_input [b, n, e], n = s + l
    k, v = project(kv_input)        q = project(latents)
    split_heads                     split_heads            -> [b, h, n, d] / [b, h, l, d]
    (qk_norm: layer_norm over d on q and k)
    attention_scores -> stable_softmax -> weighted_sum -> merge_heads -> project (output_proj)
    add_residual, then relu_mlp on layer_norm(latents), add_residual     (repeated `depth` times)
    layer_norm (final)  -> [b, l, e]

The relatives (Flamingo, OpenFlamingo, Idefics2) swap in a few steps of their own, listed at the end
of the file: RMSNorm, the GELU and SwiGLU MLPs, masking the scores, a softmax without the explicit
max subtraction, and the media/frame embeddings that come before everything else. Grouped-query
attention (fewer k/v heads than query heads) needs no step of its own: `attention_scores` and
`weighted_sum` also take k and v with g heads, g dividing h.

Every function is pure: tensors (and sizes) in, a tensor out. The nn.Modules in `modules.py` only
hold the weights and call these, so what you read here is exactly what runs.
Letters: b batch, s context length, l latents, h heads, d head dim, e embed dim, n keys (s + l);
for the relatives also g k/v heads, r query heads per k/v head (h = g r), m media (images or video
time steps), f frames per media, v tokens per frame.
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
    With IDEFICS and Flamingo, q and k have the same h heads: r = 1 below, one query head per key head.

    (Chapter 5: Idefics2's keys have g < h heads, g groups of r = h // g query heads that share them.)
    """
    scale = q.shape[-1] ** -0.5
    grouped = rearrange(q * scale, "b (g r) l d -> b g r l d", g=k.shape[1])
    scores = torch.einsum("b g r l d, b g n d -> b g r l n", grouped, k)
    return rearrange(scores, "b g r l n -> b (g r) l n")


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
    """[b, h, l, n], [b, h, n, d] -> [b, h, l, d]: each latent's new value is its attention-weighted mix of values.

    (Chapter 5: as in `attention_scores`, v may have g < h heads: each group of r = h // g query
    heads mixes the same values, so grouped-query attention stores and projects g / h of the values.)
    """
    grouped = rearrange(attn, "b (g r) l n -> b g r l n", g=v.shape[1])
    out = torch.einsum("b g r l n, b g n d -> b g r l d", grouped, v)
    return rearrange(out, "b g r l d -> b (g r) l d")


def merge_heads(x: Tensor) -> Tensor:
    """[b, h, l, d] -> [b, l, (h d)]: put the heads side by side again."""
    return rearrange(x, "b h l d -> b l (h d)")


def add_residual(latents: Tensor, update: Tensor) -> Tensor:
    """[b, l, e] + [b, l, e]: a block adds to the latents rather than replacing them."""
    return latents + update


def relu_mlp(x: Tensor, fc_weight: Tensor, c_proj_weight: Tensor) -> Tensor:
    """[b, l, e] -> [b, l, 4e] -> [b, l, e]: Linear, ReLU, Linear, bias-free (IDEFICS' `fc` and `c_proj`).

    Applied to each latent on its own: attention mixes tokens, the MLP transforms each one.
    """
    return project(F.relu(project(x, fc_weight)), c_proj_weight)


mlp = relu_mlp  # the earlier name, kept while chapters 1 and 5 call steps.mlp


# -- the relatives' steps -------------------------------------------------------------------------


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """[..., f] -> [..., f]: divide by the root mean square over the last axis, then a learned scale (Idefics2).

    Unlike LayerNorm it does not subtract the mean and has no shift: one reduction instead of two,
    and half the parameters. It is computed in float32 whatever the input's dtype, as Idefics2 (and
    the Llama/Mistral family it comes from) does, because a mean of squares overflows float16 early.
    """
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def gelu_mlp(x: Tensor, fc_weight: Tensor, c_proj_weight: Tensor) -> Tensor:
    """[b, l, e] -> [b, l, 4e] -> [b, l, e]: Linear, GELU, Linear, bias-free (Flamingo, OpenFlamingo).

    GELU (exact, with erf) is ReLU with a smooth knee: small negative inputs pass a little,
    so the gradient is not exactly zero for half the inputs.
    """
    return project(F.gelu(project(x, fc_weight)), c_proj_weight)


def swiglu_mlp(x: Tensor, gate_weight: Tensor, up_weight: Tensor, down_weight: Tensor) -> Tensor:
    """[b, l, e] -> [b, l, 4e] -> [b, l, e]: down(silu(gate(x)) * up(x)), bias-free (Idefics2, as in Mistral).

    A gated MLP: one projection (gate, through SiLU) decides how much of the other (up) passes,
    feature by feature. It has three matrices instead of two, so at the same width 4e it holds
    1.5 times the parameters of the ReLU or GELU MLP.
    """
    return project(F.silu(project(x, gate_weight)) * project(x, up_weight), down_weight)


def key_mask(attention_mask: Tensor, n_latents: int, latents_in_kv: bool = True) -> Tensor:
    """[b, s] (1 = real token, 0 = padding) -> [b, n] bool: which keys each latent may attend to.

    The latents are never masked: when they join the keys/values, n = s + l and the last l keys
    are always allowed.
    """
    real = attention_mask.bool()
    if not latents_in_kv:
        return real
    return torch.cat([real, real.new_ones(real.shape[0], n_latents)], dim=-1)


def mask_scores(scores: Tensor, keys_allowed: Tensor | None) -> Tensor:
    """[b, h, l, n], [b, n] bool -> [b, h, l, n]: padding keys' scores become -inf (unchanged when None).

    exp(-inf) = 0, so after the softmax a padding token gets exactly zero attention and the
    others share all of it, as if the padding were not there.
    """
    if keys_allowed is None:
        return scores
    return scores.masked_fill(~rearrange(keys_allowed, "b n -> b 1 1 n"), float("-inf"))


def softmax(scores: Tensor) -> Tensor:
    """[b, h, l, n] -> [b, h, l, n]: softmax over the keys, computed in float32, no explicit max subtraction.

    This is what Idefics2's attention function does. torch's softmax guards against overflow inside
    its kernel, so the results equal `stable_softmax`'s to rounding: the explicit subtraction is
    a lesson (and a guarantee whatever the kernel), not a different answer.
    """
    return scores.softmax(dim=-1, dtype=torch.float32).to(scores.dtype)


def add_frame_embeds(x: Tensor, frame_embeds: Tensor) -> Tensor:
    """[b, m, f, v, e], [F, e] -> [b, m, f, v, e]: frame i of every media gets the learned embedding i (F >= f).

    Without it the resampler cannot tell which frame a token came from (OpenFlamingo's frame_embs).
    """
    return x + rearrange(frame_embeds[: x.shape[2]], "f e -> 1 1 f 1 e")


def flatten_frames(x: Tensor) -> Tensor:
    """[b, m, f, v, e] -> [b, m, (f v), e]: the frames of one media become one context, frame after frame."""
    return rearrange(x, "b m f v e -> b m (f v) e")


def add_media_embeds(x: Tensor, media_embeds: Tensor) -> Tensor:
    """[b, m, s, e], [M, e] -> [b, m, s, e]: every token of media i gets the learned embedding i (M >= m).

    Flamingo's time embeddings (media_pos_emb, OpenFlamingo's media_time_embs): one vector per
    image or video time step, the same for all its tokens.
    """
    return x + rearrange(media_embeds[: x.shape[1]], "m e -> 1 m 1 e")


def fold_media(x: Tensor) -> Tensor:
    """[b, m, s, e] -> [(b m), s, e]: each media is resampled on its own, like another example in the batch."""
    return rearrange(x, "b m s e -> (b m) s e")


def unfold_media(latents: Tensor, n_media: int) -> Tensor:
    """[(b m), l, e] -> [b, m, l, e]: the latents of each media, back under their example."""
    return rearrange(latents, "(b m) l e -> b m l e", m=n_media)


# -- what replaced the resampler --------------------------------------------------------------------


def pixel_shuffle(x: Tensor, factor: int) -> Tensor:
    """[b, s, e] -> [b, s / r^2, (r r e)]: each r x r square of neighbouring patches becomes one wider token.

    Idefics3 and SmolVLM use this instead of a resampler (then a linear map to the LM's width): the
    context must be a square grid of patches, row by row, its side divisible by r = `factor`. Nothing
    is learned and nothing is thrown away, only rearranged: r^2 times fewer tokens, each r^2 times wider.
    """
    side = int(round(x.shape[1] ** 0.5))
    if side * side != x.shape[1] or side % factor:
        raise ValueError(
            f"pixel_shuffle needs a square grid of patches whose side is divisible by factor={factor}; "
            f"got {x.shape[1]} tokens (side {x.shape[1] ** 0.5:.3g})"
        )
    return rearrange(x, "b (h r1 w r2) e -> b (h w) (r1 r2 e)", r1=factor, r2=factor, w=side // factor)
