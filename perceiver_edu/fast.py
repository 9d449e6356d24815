"""FastResampler: the same maths as PerceiverResampler, arranged for the machine (no trace).

The step model computes what the diagram says, in its order. This module computes the same output
with fewer FLOPs and fewer passes over memory. Each trick below is the arrangement and its reason;
what each one saves is measured in chapter 6 and benchmarks/fast_path.py (the README's benchmark
section), not here, because it depends on the machine.

1. Normalise the context once. Each layer's context LayerNorm is x_hat * g_i + b_i with the same
   x_hat, so each layer's scale and shift are folded into its k/v weights (W diag(g), W b) and its
   context k and v come from x_hat in one product (`_derived`). One layer at a time, not all layers
   in one product: that would need every layer's k/v at once.
2. "absorbed" arrangement (no QK-norm): per head q . (W_k x) = (q W_k) . x and
   attn . (x W_v^T) = (attn . x) W_v^T, so the queries meet the keys/values in embedding space and
   no context token is projected: fewer FLOPs when l < d (`cost.cheaper_arrangement`). All heads
   then attend to the same keys: one head of width e with h l queries. ("Absorbing", DeepSeek-V2.)
   The two per-head products run per example (`headwise`), so their results land in place.
3. The first layer's latents are parameters: their LayerNorm, q, k, v and absorbed queries do not
   depend on the input, so they are computed once per change of the weights (`_derived`).
4. The MLP's hidden layer in blocks of e units (`mlp_in_blocks_`): the same sum in another order,
   with a block's activations small enough to stay in cache between the two products.
5. Without gradients each arrangement writes its large per-layer tensors into buffers kept
   between calls (`_workspace_for`, `workspace_bytes`): no fresh memory on every call.
6. `F.scaled_dot_product_attention` instead of einsum, softmax, einsum: one fused kernel, and no
   attention map is kept, which is also what a teacher loses (use the step model for a Trace).
7. Without gradients the absorbed arrangement pads the keys with zero rows to a multiple of 16
   (`cost.padded_keys`) and gives them weight 0, so each row of the scores starts on a cache line.

Which arrangement runs faster is measured, not predicted ("auto", `FastResampler._fastest`): FLOPs
alone mislead, because thin products and copies cost more than their FLOPs on some machines.
Configurations outside IDEFICS' seams fall back to the step model and say so (`fallback_reason`).

Precision: float32 results equal the step model's to 1e-5 (tests/test_fast.py; 1e-4 for s = 4096):
the sums are rearranged, so the last bits differ.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from . import checks, cost, measure
from .config import ResamplerConfig
from .modules import PerceiverResampler


def fast_path_support(config: ResamplerConfig) -> str | None:
    """None when FastResampler's arrangement computes `config` exactly; else why it falls back.

    The fast path is written for IDEFICS' resampler: LayerNorm, ReLU MLP, as many k/v heads as
    query heads, no media or frame embeddings, no padding mask, the stable softmax; QK-norm and
    latents_in_kv on or off. (The fields are read with getattr so older configs without them work.)
    """
    wanted = dict(
        norm="layer",
        mlp="relu",
        n_media_embeds=0,
        n_frame_embeds=0,
        accepts_mask=False,
        subtract_max=True,
        latents_init=None,
    )
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

    arrangement: "auto" (the faster of the two, timed on the first call of each input shape, dtype
    and device, and kept in `measured`), "standard" or "absorbed" (to compare).
    sdpa: attend with F.scaled_dot_product_attention (True) or matmul, softmax, matmul (False);
    None (default) = as measured best on a CPU by benchmarks/fast_path.py while the fast path was built: SDPA for "standard" (heads of d),
    matmuls for "absorbed" (one head of width e, where the fused CPU kernel was slower).
    """

    def __init__(self, model: PerceiverResampler, arrangement: str = "auto", sdpa: bool | None = None) -> None:
        super().__init__()
        if not isinstance(model, PerceiverResampler):
            raise TypeError(f"model must be a pe.PerceiverResampler; got {type(model).__name__}")
        if arrangement not in ("auto", *cost.ARRANGEMENTS):
            raise ValueError(f"arrangement must be 'auto', 'standard' or 'absorbed'; got {arrangement!r}")
        if arrangement == "absorbed" and model.config.qk_norm:
            raise ValueError(
                "arrangement='absorbed' needs qk_norm=False: QK-norm's LayerNorm on k is not linear, "
                "so k_proj cannot be folded into the queries. Use 'standard' or 'auto'"
            )
        self.model = model  # a submodule: its parameters are ours, not copies
        self.arrangement = arrangement
        self.sdpa = sdpa
        self.fallback_reason = fast_path_support(model.config)
        self._warned = False
        self._cache: tuple[Any, dict[str, Tensor]] | None = None
        self._workspace: dict[str, tuple[Any, dict[str, Tensor]]] = {}  # arrangement -> (input key, its buffers)
        self.measured: dict[tuple, str] = {}  # (input shape, dtype, device) -> the faster arrangement there

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
            raise ValueError(
                "FastResampler records no trace (it keeps no attention weights: with SDPA it never forms them); "
                "call the step model for that: fast.model(context, return_trace=True)"
            )
        if self.fallback_reason or attention_mask is not None:
            if not self._warned:
                reason = self.fallback_reason or "an attention_mask was given"
                warnings.warn(f"FastResampler falls back to the step model: {reason}", stacklevel=2)
                self._warned = True
            return self.model(context) if attention_mask is None else self.model(context, attention_mask=attention_mask)
        checks.context(context, self.config, self.model.latents)
        if self.model.check_finite:
            checks.finite(context)
        x_hat = F.layer_norm(context, context.shape[-1:], eps=self.model.blocks[0][0].context_layer_norm.eps)
        arrangement = self.arrangement if self.arrangement != "auto" else self._fastest(x_hat)
        if arrangement == "absorbed":
            return self._absorbed(x_hat)
        return self._standard(x_hat)

    def _fastest(self, x_hat: Tensor) -> str:
        """The arrangement that ran faster on inputs of this shape, dtype and device (timed on the first such call).

        Which arrangement is faster is not decided by the FLOPs alone: the absorbed one does fewer,
        but part of them in thin per-head products (inner size d) and on [h l, e] queries that
        must stay in cache, and how well a machine runs those depends on the machine and on b.
        So, like cuDNN's benchmark mode, the first call with a new (b, s, dtype, device) runs
        each once to warm up and then three times in turn (`measure.time_interleaved`), and keeps in
        `self.measured` the one whose time was the smaller in most of the three rounds (one round
        alone often picked the slower on a busy 2-core machine, where one call's time varies by
        10-20 %). That first call costs about eight calls. With QK-norm only the standard
        arrangement exists.
        """
        if self.config.qk_norm:
            return "standard"
        key = (tuple(x_hat.shape), x_hat.dtype, str(x_hat.device))
        if key not in self.measured:
            sync = torch.cuda.synchronize if x_hat.device.type == "cuda" else (lambda: None)
            with torch.no_grad():  # one warm-up call of each, then three rounds
                times = measure.time_interleaved(
                    {"standard": lambda: self._standard(x_hat), "absorbed": lambda: self._absorbed(x_hat)},
                    repeats=3,
                    sync=sync,
                )
            self.measured[key] = "absorbed" if measure.median_ratio(times, "absorbed", "standard") < 1 else "standard"
            for name in cost.ARRANGEMENTS:  # the other arrangement's buffers were only for its trial
                if name != self.measured[key]:
                    self._workspace.pop(name, None)
        return self.measured[key]

    # -- the two arrangements -----------------------------------------------------------------
    def _absorbed(self, x_hat: Tensor) -> Tensor:
        """x_hat [b, s, e] (normalised, no scale/shift) -> [b, l, e], keys/values never projected."""
        cfg, model = self.config, self.model
        h = cfg.n_heads
        b, s, _ = x_hat.shape
        n = cost.n_keys(cfg, s)
        first = self._derived()
        buffers = self._workspace_for(x_hat, "absorbed")  # None while gradients are recorded
        latents = model.latents[None]  # [1, l, e]: the same for every example until the first attention
        for i, (attention, feed_forward) in enumerate(model.blocks):
            ctx_ln = attention.context_layer_norm
            if i == 0:  # LayerNorm(latents) and u depend only on the weights: kept from the last weight change
                lat, u = first["lat"], first["u"]  # [1, l, e], [1, h, l, e]
            else:
                lat = self._latents_norm(latents, attention)  # [b, l, e]
                u = self._absorbed_queries(lat, attention, out=buffers and buffers["u"])  # [b, h, l, e]
            # this layer's LayerNorm, x_hat g + b, then the latents: the keys and the values, [b, n, e]
            if buffers is None:
                context = torch.addcmul(ctx_ln.bias, x_hat, ctx_ln.weight)
                kv = torch.cat([context, lat.expand(b, -1, -1)], dim=1) if cfg.latents_in_kv else context
            else:
                kv = buffers["kv"]  # [b, n rounded up to a multiple of 16, e]: the rows past n stay zero
                torch.addcmul(ctx_ln.bias, x_hat, ctx_ln.weight, out=kv[:, :s])
                if cfg.latents_in_kv:
                    kv[:, s:n] = lat
            # z = attn . kv_input, [b, h, l, e]; written over u, which the scores were the last to need
            z = self._attend_absorbed(u.flatten(1, 2).expand(b, -1, -1), kv, n, buffers).view(b, h, -1, kv.shape[-1])
            w_v = rearrange(attention.v_proj.weight, "(h d) e -> h e d", h=h)  # a view, no copy
            out = headwise(z, w_v, out=buffers and buffers["out"])  # (attn . x) W_v^T per head, [b, h, l, d]
            update = F.linear(rearrange(out, "b h l d -> b l (h d)"), attention.output_proj.weight)
            latents = mlp_in_blocks_(latents + update, feed_forward)
        final = model.layer_norm
        return F.layer_norm(latents, latents.shape[-1:], final.weight, final.bias, final.eps)

    def _standard(self, x_hat: Tensor) -> Tensor:
        """x_hat [b, s, e] -> [b, l, e]: each layer's context k/v from x_hat with its LayerNorm folded in."""
        cfg, model = self.config, self.model
        h, inner = cfg.n_heads, cfg.inner_dim
        b = x_hat.shape[0]
        first = self._derived()
        buffers = self._workspace_for(x_hat, "standard")  # None while gradients are recorded
        latents = model.latents[None]  # [1, l, e]
        for i, (attention, feed_forward) in enumerate(model.blocks):
            # one product for k and v of the context, [b, s, 2 (h d)]; one layer at a time, so that only
            # this layer's k/v exist at once (all layers' in one product: the same FLOPs, depth times the memory)
            layer = slice(2 * i * inner, (2 * i + 2) * inner)
            weight, bias = first["kv_weight"][layer], first["kv_bias"][layer]
            if buffers is None:
                kv_ctx = F.linear(x_hat, weight, bias)
            else:  # the same product, written into the buffer the last layer (or call) used
                kv_ctx = torch.addmm(bias, x_hat.reshape(-1, x_hat.shape[-1]), weight.t(), out=buffers["kv_ctx"]).view(
                    b, -1, 2 * inner
                )
            k_ctx, v_ctx = kv_ctx.split(inner, dim=-1)
            if i == 0:  # the first layer's latent q, k, v depend only on the weights: kept
                q, k_lat, v_lat = first["q"], first["k"], first["v"]
            else:
                q, k_lat, v_lat = self._latents_qkv(self._latents_norm(latents, attention), attention)
            q = q.expand(b, -1, -1)
            if cfg.latents_in_kv and buffers is None:
                k = torch.cat([k_ctx, k_lat.expand(b, -1, -1)], dim=1)  # [b, n, (h d)]
                v = torch.cat([v_ctx, v_lat.expand(b, -1, -1)], dim=1)
            elif cfg.latents_in_kv:  # the same join, into reused buffers
                s = x_hat.shape[1]
                k, v = buffers["k"], buffers["v"]
                k[:, :s], k[:, s:], v[:, :s], v[:, s:] = k_ctx, k_lat, v_ctx, v_lat
            else:
                k, v = k_ctx, v_ctx
            q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=h) for t in (q, k, v))
            if cfg.qk_norm:
                q_ln, k_ln = attention.q_layer_norm, attention.k_layer_norm
                q = F.layer_norm(q, q.shape[-1:], q_ln.weight, q_ln.bias, q_ln.eps)
                k = F.layer_norm(k, k.shape[-1:], k_ln.weight, k_ln.bias, k_ln.eps)
            out = self._attend(q, k, v, scale=cfg.head_dim**-0.5)  # [b, h, l, d]
            update = F.linear(rearrange(out, "b h l d -> b l (h d)"), attention.output_proj.weight)
            latents = mlp_in_blocks_(latents + update, feed_forward)
        final = model.layer_norm
        return F.layer_norm(latents, latents.shape[-1:], final.weight, final.bias, final.eps)

    # -- pieces -------------------------------------------------------------------------------
    def _workspace_for(self, x_hat: Tensor, arrangement: str) -> dict[str, Tensor] | None:
        """The tensors an arrangement writes in every layer, kept between calls; None while gradients are recorded.

        Standard: the context k/v [b s, 2 h d] and the joined k, v [b, n, h d]; absorbed: the queries u
        and then z [b, h, l, e], the scores [b, h l, n] and the joined keys/values [b, n, e]. Fresh
        memory for these costs page faults whenever the allocator has given it back to the operating
        system, so without gradients they are written (`out=`) into buffers kept for the last input
        shape of each arrangement (`workspace_bytes`). With gradients it allocates as usual: an `out=`
        result cannot be differentiated.
        """
        if torch.is_grad_enabled():
            return None
        cfg = self.config
        b, s, e = x_hat.shape
        # inference tensors stay in inference mode; sdpa decides whether the absorbed scores need a buffer
        key = (b, s, x_hat.dtype, x_hat.device, torch.is_inference_mode_enabled(), self.sdpa)
        kept = self._workspace.get(arrangement)
        if kept is None or kept[0] != key:
            self._workspace.pop(arrangement, None)  # free the old buffers before making new ones
            n = s + cfg.n_latents if cfg.latents_in_kv else s
            h, l, d = cfg.n_heads, cfg.n_latents, cfg.head_dim

            def empty(*shape: int) -> Tensor:
                return torch.empty(*shape, dtype=x_hat.dtype, device=x_hat.device)

            if arrangement == "standard":
                shapes = dict(
                    kv_ctx=(b * s, 2 * h * d), **(dict(k=(b, n, h * d), v=(b, n, h * d)) if cfg.latents_in_kv else {})
                )
            else:
                n_pad = cost.padded_keys(n)
                shapes = dict(u=(b, h, l, e), kv=(b, n_pad, e), out=(b, h, l, d))
                if not self.sdpa:  # SDPA makes its scores inside its kernel
                    shapes["scores"] = (b, h * l, n_pad)
            self._workspace[arrangement] = (key, {name: empty(*shape) for name, shape in shapes.items()})
            if arrangement == "absorbed":
                self._workspace[arrangement][1]["kv"][:, n:].zero_()  # the padding keys: zero, never written again
        return self._workspace[arrangement][1]

    def workspace_bytes(self) -> int:
        """Bytes of the buffers kept between calls (0 before a call without gradients)."""
        return sum(t.numel() * t.element_size() for _, kept in self._workspace.values() for t in kept.values())

    @staticmethod
    def _latents_norm(latents: Tensor, attention: nn.Module) -> Tensor:
        ln = attention.latents_layer_norm
        return F.layer_norm(latents, latents.shape[-1:], ln.weight, ln.bias, ln.eps)

    def _latents_qkv(self, lat: Tensor, attention: nn.Module) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The latents' q, k, v [b, l, (h d)] (k, v None when the latents are not keys).

        Three products, not one fused [3 h d, e] product: with few rows (l), each weight is read once
        either way, and three smaller weights stay in cache where one fused weight may not.
        """
        q = F.linear(lat, attention.q_proj.weight)
        if not self.config.latents_in_kv:
            return q, None, None
        return q, F.linear(lat, attention.k_proj.weight), F.linear(lat, attention.v_proj.weight)

    def _absorbed_queries(self, lat: Tensor, attention: nn.Module, out: Tensor | None = None) -> Tensor:
        """u = (q / sqrt(d)) W_k per head: the latents' queries in embedding space, [b, h, l, e]."""
        h, d = self.config.n_heads, self.config.head_dim
        q = rearrange(F.linear(lat, attention.q_proj.weight), "b l (h d) -> b h l d", h=h).mul(d**-0.5)
        return headwise(q, rearrange(attention.k_proj.weight, "(h d) e -> h d e", h=h), out)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """The standard arrangement's attention, softmax(q k^T * scale) v per head, [b, h, l, d]."""
        if self.sdpa is None or self.sdpa:
            return F.scaled_dot_product_attention(q, k, v, scale=scale)
        return torch.matmul(torch.matmul(q * scale, k.transpose(-1, -2)).softmax(dim=-1), v)

    def _attend_absorbed(self, u: Tensor, kv: Tensor, n: int, buffers: dict[str, Tensor] | None) -> Tensor:
        """softmax(u kv^T) kv over the first n keys: one head of width e, u [b, h l, e], kv [b, >= n, e] -> [b, h l, e].

        With buffers, kv has zero rows past n (padding, trick 7): the scores go into their buffer,
        the padded columns are set to -inf (weight 0, so they add nothing to the sum), and the
        result is written over u's buffer (u is not needed once the scores exist).
        """
        if self.sdpa:
            return F.scaled_dot_product_attention(u, kv[:, :n], kv[:, :n], scale=1.0)
        if buffers is None:
            return torch.bmm(torch.bmm(u, kv.transpose(1, 2)).softmax(dim=-1), kv)
        scores = torch.bmm(u, kv.transpose(1, 2), out=buffers["scores"])  # [b, h l, n padded]
        scores[..., n:] = -torch.inf  # the padding keys get weight exp(-inf) = 0
        # a new tensor for the weights: softmax in place takes three passes (max, exp, sum) where the
        # fused softmax into fresh memory takes one
        return torch.bmm(scores.softmax(dim=-1), kv, out=buffers["u"].view(u.shape))

    def _derived(self) -> dict[str, Tensor]:
        """What depends only on the parameters, computed once per change of them.

        kv_weight, kv_bias: all layers' context k/v weights with their LayerNorm folded in (layer i's
        k and v are rows 2 i h d to 2 (i + 1) h d),
        LN_i(x) W^T = (x_hat g_i + b_i) W^T = x_hat (W diag(g_i))^T + W b_i.
        lat, q, k, v, u: the first layer's LayerNorm(latents), the latents' q, k, v [1, l, (h d)] and
        the absorbed queries u [1, (h l), e]: the latents are parameters, so before the first
        attention nothing about them depends on the input.
        Recomputed whenever a parameter changes (its version counter moves: an optimizer step, an
        in-place edit under torch.no_grad(), load_state_dict) and on every call while gradients are
        recorded, so training works and the fast path does not go stale. One change it cannot see:
        an edit through `p.data`, which has a version counter of its own; after one, make a new
        FastResampler.
        """
        params = list(self.model.parameters())
        recording = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        # `_version` is the counter autograd itself keeps to notice in-place changes of a tensor. It is
        # private, but torch has no public way to ask "did this tensor change?" short of comparing its
        # values (as expensive as recomputing); tests/test_fast.py checks that an in-place edit and
        # load_state_dict are seen, so a torch release that changed it would fail there, not silently.
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if self._cache is not None and self._cache[0] == key and not recording:
            return self._cache[1]
        weights, biases = [], []
        for attention, _ in self.model.blocks:
            ln = attention.context_layer_norm
            for proj in (attention.k_proj, attention.v_proj):
                weights.append(proj.weight * ln.weight)  # W diag(g): scales column j by g_j
                biases.append(proj.weight @ ln.bias)  # W b
        attention = self.model.blocks[0][0]
        lat = self._latents_norm(self.model.latents[None], attention)
        q, k, v = self._latents_qkv(lat, attention)
        derived = dict(kv_weight=torch.cat(weights), kv_bias=torch.cat(biases), lat=lat, q=q, k=k, v=v)
        if not self.config.qk_norm:
            derived["u"] = self._absorbed_queries(lat, attention)  # [1, h, l, e]
        if not recording:
            self._cache = (key, derived)
        return derived


def headwise(a: Tensor, weight: Tensor, out: Tensor | None = None) -> Tensor:
    """a [b, h, m, k] @ weight [h, k, n] -> [b, h, m, n]: each head's rows times that head's weight.

    One batched product over the heads per example. Batching over the heads of all examples at
    once ("b h m k, h k n -> b h m n" as one einsum) puts the heads first, [h, b m, n], and the
    result must then be copied back to [b, h, m, n]; a broadcasting matmul over b would copy each
    weight b times. Per example, the weight is read as it is and the result lands where it
    belongs. With `out` it is written there.
    """
    if out is None:
        return torch.stack([torch.bmm(a_i, weight) for a_i in a])
    for a_i, out_i in zip(a, out):
        torch.bmm(a_i, weight, out=out_i)
    return out


def mlp_in_blocks_(latents: Tensor, feed_forward: nn.Module) -> Tensor:
    """latents + MLP(LayerNorm(latents)), [b, l, e]: IN PLACE without gradients (the sum is written
    into `latents`, which is returned), a new tensor with gradients. Pass a tensor you do not need
    afterwards (FastResampler passes latents + update, a fresh one).

    relu(x W1^T) W2^T = sum over blocks j of relu(x W1_j^T) W2_j^T: each hidden unit feeds the
    output on its own, so the 4e hidden units are taken e at a time, and a block's activations stay
    in cache between the two products. The sum is in another order, so the last bits differ. With
    gradients it allocates, because the LayerNorm keeps `latents` for its backward pass. Not addmm
    with the sum as its input: the product would be added to the large residual in pieces, each
    rounded against it (twice the error against float64).
    """
    ln = feed_forward.ln
    width = latents.shape[-1]
    x = F.layer_norm(latents, latents.shape[-1:], ln.weight, ln.bias, ln.eps)
    fc, c_proj = feed_forward.fc.weight, feed_forward.c_proj.weight  # [4e, e], [e, 4e]
    add = torch.Tensor.add if torch.is_grad_enabled() else torch.Tensor.add_
    out = latents
    for j in range(0, fc.shape[0], width):
        out = add(out, F.linear(F.linear(x, fc[j : j + width]).relu_(), c_proj[:, j : j + width]))
    return out


# The old name, which hid the in-place sum; chapter 6 (cell 29) still calls it. Remove with that cell.
mlp_in_blocks = mlp_in_blocks_


@torch.no_grad()
def precision_errors(
    model: PerceiverResampler, context: Tensor, dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
) -> dict[str, float]:
    """Largest |FastResampler in dtype - step model in float32| for each dtype, on model's device.

    float16 keeps 10 bits of mantissa (about 3 decimal digits), bfloat16 7 bits but float32's range;
    the errors say what half precision costs this model. The model itself is left as it was (copies are converted).
    """
    reference = copy.deepcopy(model).float()(context.float())
    errors = {}
    for dtype in dtypes:
        low = FastResampler(copy.deepcopy(model).to(dtype))
        errors[str(dtype).replace("torch.", "")] = float((low(context.to(dtype)).float() - reference).abs().max())
    return errors
