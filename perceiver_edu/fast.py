"""FastResampler: the same maths as PerceiverResampler, arranged for the machine (no trace).

The step model computes what the diagram says, in its order. This module computes the same
output with fewer FLOPs and fewer passes over memory; chapter 6 measures each trick on its own.

1. Normalise the context once. Each layer's context LayerNorm is x_hat * g_i + b_i with the same
   x_hat = (x - mean) / std, so only the scale and shift differ between layers.
2. "absorbed" arrangement (no QK-norm): per head, q . (W_k x) = (q W_k) . x and
   attn . (x W_v^T) = (attn . x) W_v^T. The latents' queries are mapped back to embedding space
   (u = q W_k, [b, h, l, e]) and meet the keys/values there, so no key/value token is projected:
   2 h l n e per product instead of 2 n e h d for the projections, cheaper when l < d
   (IDEFICS: 64 < 96) and the more so the longer the context.  (DeepSeek-V2 calls this "absorbing".)
   All heads' queries then attend to the same keys, so attention is a single head of width e with
   h * l queries: one call of `F.scaled_dot_product_attention`.
3. "standard" arrangement (QK-norm, or where it is cheaper): each layer's LayerNorm scale and shift
   are folded into its k/v weights (W diag(g), W b), so all layers' context keys and values come
   from x_hat in ONE matrix product before the loop; the latents' q, k, v in one fused product.
4. The first layer's latents are the same for every example: what depends only on them is
   computed once, not b times (broadcasting does the rest).
5. `F.scaled_dot_product_attention` instead of einsum, softmax, einsum: one fused kernel, and no
   [b, h, l, n] attention map is kept. That is also what a teacher loses: there are no attention
   weights to look at. Use the step model (return_trace=True) for that.

The arrangement is chosen per call by formula (`cost.cheaper_arrangement`). Configurations outside
the IDEFICS arrangement fall back to the step model, and say so (`fallback_reason`, a warning).

Precision: float32 results equal the step model's to 1e-5 over the parity test's configurations
(tests/test_fast.py). The sums are rearranged (a score sums e products in embedding space instead
of d; the folded LayerNorm adds W b after the product instead of b before it), so the last bits
differ; for long contexts (s = 4096 at IDEFICS' width) the test allows 1e-4, because the softmax
and the weighted sum then add up thousands of rounded terms per latent.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from . import cost
from .config import ResamplerConfig
from .modules import PerceiverResampler, check_context


def fast_path_support(config: ResamplerConfig) -> str | None:
    """None when FastResampler's arrangement computes `config` exactly; else why it falls back.

    The fast path is written for IDEFICS' resampler: LayerNorm, ReLU MLP, as many k/v heads as
    query heads, no media or frame embeddings, no padding mask, the stable softmax; QK-norm and
    latents_in_kv on or off. (The fields are read with getattr so older configs without them work.)
    """
    wanted = dict(norm="layer", mlp="relu", n_media_embeds=0, n_frame_embeds=0, accepts_mask=False,
                  subtract_max=True, latents_init=None)
    reasons = []
    for name, value in wanted.items():
        if value is None:
            continue  # how the latents start does not change the forward pass
        got = getattr(config, name, value)
        if got != value:
            reasons.append(f"{name}={got!r} (the fast path needs {value!r})")
    n_kv_heads = getattr(config, "n_kv_heads", None)
    if n_kv_heads not in (None, config.n_heads):
        reasons.append(f"n_kv_heads={n_kv_heads} (the fast path needs n_kv_heads == n_heads)")
    return "; ".join(reasons) or None


class FastResampler(nn.Module):
    """context [b, s, e] -> latents [b, l, e], equal to `model(context)`; shares `model`'s parameters.

    >>> model = PerceiverResampler(ResamplerConfig.idefics())
    >>> fast = FastResampler(model)          # no copy: fast.model is model
    >>> fast(context)                        # == model(context), to 1e-5 in float32

    arrangement: "auto" (fewer FLOPs by formula, per call), "standard" or "absorbed" (to compare).
    sdpa: attend with F.scaled_dot_product_attention (True) or matmul, softmax, matmul (False);
    None (default) = as measured best on a CPU in chapter 6: SDPA for "standard" (heads of d),
    matmuls for "absorbed" (one head of width e, where the fused CPU kernel was slower).
    """

    def __init__(self, model: PerceiverResampler, arrangement: str = "auto", sdpa: bool | None = None) -> None:
        super().__init__()
        if not isinstance(model, PerceiverResampler):
            raise TypeError(f"model must be a pe.PerceiverResampler; got {type(model).__name__}")
        if arrangement not in ("auto", *cost.ARRANGEMENTS):
            raise ValueError(f"arrangement must be 'auto', 'standard' or 'absorbed'; got {arrangement!r}")
        if arrangement == "absorbed" and model.config.qk_norm:
            raise ValueError("arrangement='absorbed' needs qk_norm=False: QK-norm's LayerNorm on k is not linear, "
                             "so k_proj cannot be folded into the queries. Use 'standard' or 'auto'")
        self.model = model  # a submodule: its parameters are ours, not copies
        self.arrangement = arrangement
        self.sdpa = sdpa
        self.fallback_reason = fast_path_support(model.config)
        self._warned = False
        self._cache: tuple[Any, list[Tensor]] | None = None

    @property
    def config(self) -> ResamplerConfig:
        return self.model.config

    def extra_repr(self) -> str:
        if self.fallback_reason:
            return f"fallback to the step model: {self.fallback_reason}"
        return f"arrangement={self.arrangement!r}, sdpa={self.sdpa}"

    def forward(self, context: Tensor, attention_mask: Tensor | None = None, return_trace: bool = False) -> Tensor:
        """[b, s, e] -> [b, l, e]"""
        if return_trace:
            raise ValueError("FastResampler records no trace (its attention never forms the weights); "
                             "call the step model for that: fast.model(context, return_trace=True)")
        if self.fallback_reason or attention_mask is not None:
            if not self._warned:
                reason = self.fallback_reason or "an attention_mask was given"
                warnings.warn(f"FastResampler falls back to the step model: {reason}", stacklevel=2)
                self._warned = True
            return self.model(context) if attention_mask is None else self.model(context, attention_mask=attention_mask)
        cfg = self.config
        check_context(context, cfg, self.model.latents)
        b, s, _ = context.shape
        arrangement = self.arrangement
        if arrangement == "auto":
            arrangement = cost.cheaper_arrangement(cfg, b, s)
        x_hat = F.layer_norm(context, context.shape[-1:], eps=self.model.blocks[0][0].context_layer_norm.eps)
        if arrangement == "absorbed":
            return self._absorbed(x_hat)
        return self._standard(x_hat)

    # -- the two arrangements -----------------------------------------------------------------
    def _absorbed(self, x_hat: Tensor) -> Tensor:
        """x_hat [b, s, e] (normalised, no scale/shift) -> [b, l, e], keys/values never projected."""
        cfg, model = self.config, self.model
        h, d, l = cfg.n_heads, cfg.head_dim, cfg.n_latents
        b = x_hat.shape[0]
        latents = model.latents[None]  # [1, l, e]: the same for every example until the first attention
        for attention, feed_forward in model.blocks:
            ctx_ln, lat_ln = attention.context_layer_norm, attention.latents_layer_norm
            lat = F.layer_norm(latents, latents.shape[-1:], lat_ln.weight, lat_ln.bias, lat_ln.eps)  # [b|1, l, e]
            context = torch.addcmul(ctx_ln.bias, x_hat, ctx_ln.weight)  # this layer's LayerNorm: x_hat g + b
            kv_input = torch.cat([context, lat.expand(b, -1, -1)], dim=1) if cfg.latents_in_kv else context  # [b, n, e]
            q = rearrange(F.linear(lat, attention.q_proj.weight), "b l (h d) -> b l h d", h=h) * d**-0.5
            w_k = rearrange(attention.k_proj.weight, "(h d) e -> h d e", h=h)
            # einsum batches over the heads, so the weights are read as they are; a broadcasting
            # matmul over b would copy each weight b times
            u = torch.einsum("b l h d, h d e -> b h l e", q, w_k)  # (q / sqrt(d)) W_k: queries in embedding space
            u = rearrange(u, "b h l e -> b (h l) e").expand(b, -1, -1)
            z = self._attend(u, kv_input, scale=1.0)  # [b, (h l), e]: attn . kv_input
            w_v = rearrange(attention.v_proj.weight, "(h d) e -> h d e", h=h)
            out = torch.einsum("b h l e, h d e -> b l h d", rearrange(z, "b (h l) e -> b h l e", h=h), w_v)  # (attn . x) W_v^T
            update = F.linear(rearrange(out, "b l h d -> b l (h d)"), attention.output_proj.weight)
            latents = self._mlp_block(latents + update, feed_forward)
        final = model.layer_norm
        return F.layer_norm(latents, latents.shape[-1:], final.weight, final.bias, final.eps)

    def _standard(self, x_hat: Tensor) -> Tensor:
        """x_hat [b, s, e] -> [b, l, e]: all layers' context k/v in one product, then the layers."""
        cfg, model = self.config, self.model
        h, inner = cfg.n_heads, cfg.inner_dim
        b = x_hat.shape[0]
        folded_weight, folded_bias, qkv_weights = self._folded_weights()
        kv_context = F.linear(x_hat, folded_weight, folded_bias)  # [b, s, depth * 2 * (h d)]
        latents = model.latents[None]  # [1, l, e]
        for i, (attention, feed_forward) in enumerate(model.blocks):
            lat_ln = attention.latents_layer_norm
            lat = F.layer_norm(latents, latents.shape[-1:], lat_ln.weight, lat_ln.bias, lat_ln.eps)
            k_ctx, v_ctx = kv_context[..., 2 * i * inner:(2 * i + 2) * inner].split(inner, dim=-1)  # [b, s, (h d)]
            if cfg.latents_in_kv:
                q, k_lat, v_lat = F.linear(lat, qkv_weights[i]).expand(b, -1, -1).split(inner, dim=-1)
                k, v = torch.cat([k_ctx, k_lat], dim=1), torch.cat([v_ctx, v_lat], dim=1)  # [b, n, (h d)]
            else:
                q, k, v = F.linear(lat, attention.q_proj.weight).expand(b, -1, -1), k_ctx, v_ctx
            q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=h) for t in (q, k, v))
            if cfg.qk_norm:
                q_ln, k_ln = attention.q_layer_norm, attention.k_layer_norm
                q = F.layer_norm(q, q.shape[-1:], q_ln.weight, q_ln.bias, q_ln.eps)
                k = F.layer_norm(k, k.shape[-1:], k_ln.weight, k_ln.bias, k_ln.eps)
            out = self._attend(q, k, v_input=v, scale=cfg.head_dim**-0.5)  # [b, h, l, d]
            update = F.linear(rearrange(out, "b h l d -> b l (h d)"), attention.output_proj.weight)
            latents = self._mlp_block(latents + update, feed_forward)
        final = model.layer_norm
        return F.layer_norm(latents, latents.shape[-1:], final.weight, final.bias, final.eps)

    # -- pieces -------------------------------------------------------------------------------
    def _attend(self, q: Tensor, kv: Tensor, scale: float, v_input: Tensor | None = None) -> Tensor:
        """softmax(q k^T * scale) v; keys = kv, values = v_input (or kv itself when absorbed)."""
        v = kv if v_input is None else v_input
        if self.sdpa or (self.sdpa is None and v_input is not None):
            return F.scaled_dot_product_attention(q, kv, v, scale=scale)
        scores = torch.matmul(q * scale if scale != 1.0 else q, kv.transpose(-1, -2))
        return torch.matmul(scores.softmax(dim=-1), v)

    @staticmethod
    def _mlp_block(latents: Tensor, feed_forward: nn.Module) -> Tensor:
        """latents + MLP(LayerNorm(latents)), [b, l, e]."""
        ln = feed_forward.ln
        x = F.layer_norm(latents, latents.shape[-1:], ln.weight, ln.bias, ln.eps)
        return latents + F.linear(F.relu(F.linear(x, feed_forward.fc.weight)), feed_forward.c_proj.weight)

    def _folded_weights(self) -> tuple[Tensor, Tensor, list[Tensor]]:
        """All layers' context k/v weights with their LayerNorm folded in, and each layer's fused q/k/v.

        LN_i(x) W^T = (x_hat g_i + b_i) W^T = x_hat (W diag(g_i))^T + W b_i. These are derived from
        the parameters, not parameters: recomputed whenever a parameter changes (its version
        counter moves) and on every call while gradients are recorded, so training works.
        """
        params = list(self.model.parameters())
        recording = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if self._cache is not None and self._cache[0] == key and not recording:
            return self._cache[1]
        weights, biases, qkv = [], [], []
        for attention, _ in self.model.blocks:
            ln = attention.context_layer_norm
            for proj in (attention.k_proj, attention.v_proj):
                weights.append(proj.weight * ln.weight)  # W diag(g): scales column j by g_j
                biases.append(proj.weight @ ln.bias)  # W b
            qkv.append(torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]))
        folded = (torch.cat(weights), torch.cat(biases), qkv)
        if not recording:
            self._cache = (key, folded)
        return folded


@torch.no_grad()
def precision_errors(model: PerceiverResampler, context: Tensor,
                     dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)) -> dict[str, float]:
    """Largest |FastResampler in dtype - step model in float32| for each dtype, on model's device.

    float16 keeps 10 bits of mantissa (about 3 decimal digits), bfloat16 7 bits but float32's range;
    the errors say what half precision costs this model. The model itself is left as it was.
    """
    reference = model.float()(context.float())
    errors = {}
    for dtype in dtypes:
        low = FastResampler(copy.deepcopy(model).to(dtype))
        errors[str(dtype).replace("torch.", "")] = float((low(context.to(dtype)).float() - reference).abs().max())
    return errors
