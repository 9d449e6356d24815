"""PerceiverAttention, FeedForward and PerceiverResampler: the weights, and the steps in order.

The modules hold parameters under the names transformers gives IDEFICS' resampler
(`blocks.{i}.0.q_proj`, `blocks.{i}.1.fc`, ...), so that a learner recognises them. Moving weights to
and from other implementations is not this file's job: see `perceiver_edu/interop/`.
Their forward passes only call the step functions in `steps.py`: there is no second implementation.

The family's seams (see `ResamplerConfig`) are read once, here, when the parts are built: which norm
module, which MLP step, how many k/v heads, which softmax, how the latents start, whether there are
media and frame embeddings. A forward pass then runs the same list of steps for every relative.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from . import checks, steps
from .config import ResamplerConfig
from .trace import Trace


class LayerNorm(nn.LayerNorm):
    """torch's LayerNorm (weight and bias, same state dict), running `steps.layer_norm`."""

    def forward(self, x: Tensor) -> Tensor:
        return steps.layer_norm(x, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """RMSNorm with a weight only (Idefics2), running `steps.rms_norm` (in float32)."""

    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return steps.rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


NORMS: dict[str, type[nn.Module]] = {"layer": LayerNorm, "rms": RMSNorm}
SOFTMAXES: dict[bool, Callable[[Tensor], Tensor]] = {True: steps.stable_softmax, False: steps.softmax}


def make_norm(config: ResamplerConfig, width: int) -> nn.Module:
    """The norm the config asks for (`config.norm`), over `width` features."""
    return NORMS[config.norm](width, eps=config.eps)


class PerceiverAttention(nn.Module):
    """One cross-attention: latents [b, l, e] ask, context [b, s, e] (+ the latents) answer."""

    def __init__(self, config: ResamplerConfig) -> None:
        super().__init__()
        self.config = config
        e, inner = config.embed_dim, config.inner_dim
        self.context_layer_norm = make_norm(config, e)  # the name IDEFICS gives it, also when it is an RMSNorm
        self.latents_layer_norm = make_norm(config, e)
        if config.qk_norm:
            # normalises each head's d features of q and k: scores then stay in a bounded range
            self.q_layer_norm = make_norm(config, config.head_dim)
            self.k_layer_norm = make_norm(config, config.head_dim)
        # bias-free, as in every relative; k and v are narrower than q with grouped-query attention
        self.q_proj = nn.Linear(e, inner, bias=False)
        self.k_proj = nn.Linear(e, config.kv_dim, bias=False)
        self.v_proj = nn.Linear(e, config.kv_dim, bias=False)
        self.output_proj = nn.Linear(inner, e, bias=False)
        self.softmax = SOFTMAXES[config.subtract_max]

    def forward(
        self, context: Tensor, latents: Tensor, keys_allowed: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """context [b, s, e], latents [b, l, e], keys_allowed [b, n] bool or None
        -> (update [b, l, e], scores [b, h, l, n] before masking, attn [b, h, l, n])."""
        cfg = self.config
        context = self.context_layer_norm(context)  # [b, s, e]
        latents = self.latents_layer_norm(latents)  # [b, l, e]
        kv_input = steps.join_latents(context, latents) if cfg.latents_in_kv else context  # [b, n, e]

        q = steps.split_heads(steps.project(latents, self.q_proj.weight), cfg.n_heads)  # [b, h, l, d]
        k = steps.split_heads(steps.project(kv_input, self.k_proj.weight), cfg.kv_heads)  # [b, g, n, d]
        v = steps.split_heads(steps.project(kv_input, self.v_proj.weight), cfg.kv_heads)  # [b, g, n, d]
        if cfg.qk_norm:
            q, k = self.q_layer_norm(q), self.k_layer_norm(k)

        scores = steps.attention_scores(q, k)  # [b, h, l, n]
        attn = self.softmax(steps.mask_scores(scores, keys_allowed))  # [b, h, l, n], rows sum to 1
        out = steps.merge_heads(steps.weighted_sum(attn, v))  # [b, l, (h d)]
        return steps.project(out, self.output_proj.weight), scores, attn  # [b, l, e]


# The MLP kinds: the step that runs, and the names of its weight matrices in the order it takes them.
MLPS: dict[str, tuple[Callable[..., Tensor], tuple[str, ...]]] = {
    "relu": (steps.relu_mlp, ("fc", "c_proj")),
    "gelu": (steps.gelu_mlp, ("fc", "c_proj")),
    "swiglu": (steps.swiglu_mlp, ("gate_proj", "up_proj", "down_proj")),
}


class FeedForward(nn.Module):
    """Norm -> MLP (e -> 4e -> e), on each latent: IDEFICS' ReLU `fc, c_proj`, Flamingo's GELU, or
    Idefics2's SwiGLU `gate_proj, up_proj, down_proj`."""

    def __init__(self, config: ResamplerConfig) -> None:
        super().__init__()
        e, hidden = config.embed_dim, config.mlp_dim
        self.ln = make_norm(config, e)
        self.step, self.weight_names = MLPS[config.mlp]
        for name in self.weight_names:
            # the last matrix brings the hidden width back to e; the others widen to 4e
            last = name == self.weight_names[-1]
            setattr(self, name, nn.Linear(hidden, e, bias=False) if last else nn.Linear(e, hidden, bias=False))

    def forward(self, latents: Tensor) -> Tensor:
        """[b, l, e] -> [b, l, e]"""
        return self.step(self.ln(latents), *(getattr(self, name).weight for name in self.weight_names))


LATENT_INITS: dict[str, Callable[..., Tensor]] = {"randn": torch.randn, "ones": torch.ones}


class PerceiverResampler(nn.Module):
    """context [b, s, e] -> latents [b, l, e]: `depth` blocks of (attention + MLP), then a norm.

    Also takes the relatives' inputs: [b, m, s, e] (m images or time steps, Flamingo) -> [b, m, l, e],
    and [b, m, f, v, e] (m media of f frames of v tokens, OpenFlamingo) -> [b, m, l, e]; each media is
    resampled on its own. With `accepts_mask`, `attention_mask` [b, s] (1 = real token) hides padding.

    >>> model = PerceiverResampler(ResamplerConfig.tiny())
    >>> latents, trace = model(torch.randn(1, 257, 32), return_trace=True)

    `check_finite` (True by default) refuses a context with NaN or inf, which would otherwise turn every
    attention map into NaN. It is a policy of this run, not part of the architecture: set
    `model.check_finite = False` to skip the check (it reads the whole context once).
    """

    check_finite: bool = True

    def __init__(self, config: ResamplerConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = ResamplerConfig(**overrides)
        elif not isinstance(config, ResamplerConfig):
            raise TypeError(f"config must be a ResamplerConfig; got {type(config).__name__}")
        elif overrides:
            config = config.replace(**overrides)
        self.config = config
        # randn as in IDEFICS and Flamingo (random points, training gives them a role), ones in Idefics2
        self.latents = nn.Parameter(LATENT_INITS[config.latents_init](config.n_latents, config.embed_dim))
        if config.n_media_embeds:
            self.media_embeds = nn.Parameter(torch.randn(config.n_media_embeds, config.embed_dim))
        if config.n_frame_embeds:
            self.frame_embeds = nn.Parameter(torch.randn(config.n_frame_embeds, config.embed_dim))
        self.blocks = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(config), FeedForward(config)]) for _ in range(config.depth)
        )
        self.layer_norm = make_norm(config, config.embed_dim)

    def forward(
        self, context: Tensor, attention_mask: Tensor | None = None, return_trace: bool = False
    ) -> Tensor | tuple[Tensor, Trace]:
        """[b, s, e] -> [b, l, e] (or [b, m, s, e] / [b, m, f, v, e] -> [b, m, l, e]);
        with return_trace=True also the Trace of what happened inside."""
        checks.context(context, self.config, self.latents)
        if self.check_finite:
            checks.finite(context)
        checks.attention_mask(attention_mask, context, self.config)
        flat = self.embed_media(context)  # [(b m), s, e]
        n_media = context.shape[1] if context.dim() > 3 else 1  # media folded into the batch, example-major
        keys_allowed = self.keys_allowed(attention_mask)  # [(b m), n] or None
        latents = steps.repeat_latents(self.latents, flat.shape[0])  # [(b m), l, e]
        record = [] if return_trace else None
        for attention, feed_forward in self.blocks:
            update, scores, attn = attention(flat, latents, keys_allowed)
            latents = steps.add_residual(latents, update)
            latents = steps.add_residual(latents, feed_forward(latents))
            if record is not None:
                record.append((attn.detach(), scores.detach(), latents.detach()))
        output = self.layer_norm(latents)  # [(b m), l, e]
        if context.dim() > 3:
            output = steps.unfold_media(output, n_media)  # [b, m, l, e]
        if record is None:
            return output
        attentions, scores, per_layer = (tuple(x) for x in zip(*record))
        trace = Trace(
            attentions,
            scores,
            per_layer,
            context_length=flat.shape[1],
            latents_in_kv=self.config.latents_in_kv,
            n_media=n_media,
        )
        return output, trace

    def embed_media(self, context: Tensor) -> Tensor:
        """[b, s, e] | [b, m, s, e] | [b, m, f, v, e] -> [(b m), s', e]: add the frame and media embeddings
        the config has, flatten the frames of each media into one context, and fold media into the batch."""
        x = context
        if x.dim() == 5:
            if self.config.n_frame_embeds:
                x = steps.add_frame_embeds(x, self.frame_embeds)
            x = steps.flatten_frames(x)  # [b, m, (f v), e]
        elif x.dim() == 3:
            x = x[:, None]  # one media: [b, 1, s, e]
        if self.config.n_media_embeds:
            x = steps.add_media_embeds(x, self.media_embeds)
        return steps.fold_media(x)

    def keys_allowed(self, attention_mask: Tensor | None) -> Tensor | None:
        """attention_mask [b, s] or [b, m, s] (1 = real token) -> [(b m), n] bool, the keys each latent may see."""
        if attention_mask is None:
            return None
        flat = attention_mask.reshape(-1, attention_mask.shape[-1])
        return steps.key_mask(flat, self.config.n_latents, self.config.latents_in_kv)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.to_dict().items())


@torch.no_grad()
def scale_qk_(model: PerceiverResampler, gain: float) -> PerceiverResampler:
    """Multiply every block's q_proj and k_proj weights by `gain`, in place; returns the model.

    Every score q . k / sqrt(d) then grows by gain**2 (without QK-norm), like dividing by a softmax
    temperature: a stand-in for the sharper attention of trained weights, used by the chapters to
    make random-weight maps readable. With QK-norm the LayerNorm undoes the gain on q and k.
    """
    for attention, _ in model.blocks:
        attention.q_proj.weight.mul_(gain)
        attention.k_proj.weight.mul_(gain)
    return model
