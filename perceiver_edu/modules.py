"""PerceiverAttention, FeedForward and PerceiverResampler: the weights, and the steps in order.

The modules hold parameters under the names transformers gives them (`blocks.{i}.0.q_proj`,
`blocks.{i}.1.fc`, ...), so a state dict moves between the two implementations unchanged. Their
forward passes only call the step functions in `steps.py`: there is no second implementation here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from . import steps
from .config import ResamplerConfig
from .trace import Trace


class PerceiverAttention(nn.Module):
    """One cross-attention: latents [b, l, e] ask, context [b, s, e] (+ the latents) answer."""

    def __init__(self, config: ResamplerConfig) -> None:
        super().__init__()
        self.config = config
        e, inner = config.embed_dim, config.inner_dim
        self.context_layer_norm = nn.LayerNorm(e)
        self.latents_layer_norm = nn.LayerNorm(e)
        if config.qk_norm:
            # normalises each head's d features of q and k: scores then stay in a bounded range
            self.q_layer_norm = nn.LayerNorm(config.head_dim)
            self.k_layer_norm = nn.LayerNorm(config.head_dim)
        # bias-free, as in Flamingo and IDEFICS
        self.q_proj = nn.Linear(e, inner, bias=False)
        self.k_proj = nn.Linear(e, inner, bias=False)
        self.v_proj = nn.Linear(e, inner, bias=False)
        self.output_proj = nn.Linear(inner, e, bias=False)

    def forward(self, context: Tensor, latents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """context [b, s, e], latents [b, l, e] -> (update [b, l, e], scores [b, h, l, n], attn [b, h, l, n])."""
        cfg = self.config
        context = steps.layer_norm(context, self.context_layer_norm.weight, self.context_layer_norm.bias)  # [b, s, e]
        latents = steps.layer_norm(latents, self.latents_layer_norm.weight, self.latents_layer_norm.bias)  # [b, l, e]
        kv_input = steps.join_latents(context, latents) if cfg.latents_in_kv else context  # [b, n, e]

        q = steps.split_heads(steps.project(latents, self.q_proj.weight), cfg.n_heads)  # [b, h, l, d]
        k = steps.split_heads(steps.project(kv_input, self.k_proj.weight), cfg.n_heads)  # [b, h, n, d]
        v = steps.split_heads(steps.project(kv_input, self.v_proj.weight), cfg.n_heads)  # [b, h, n, d]
        if cfg.qk_norm:
            q = steps.layer_norm(q, self.q_layer_norm.weight, self.q_layer_norm.bias)
            k = steps.layer_norm(k, self.k_layer_norm.weight, self.k_layer_norm.bias)

        scores = steps.attention_scores(q, k)  # [b, h, l, n]
        attn = steps.stable_softmax(scores)  # [b, h, l, n], rows sum to 1
        out = steps.merge_heads(steps.weighted_sum(attn, v))  # [b, l, (h d)]
        return steps.project(out, self.output_proj.weight), scores, attn  # [b, l, e]


class FeedForward(nn.Module):
    """LayerNorm -> Linear(e, 4e) -> ReLU -> Linear(4e, e), on each latent (IDEFICS' IdeficsMLP)."""

    def __init__(self, config: ResamplerConfig) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(config.embed_dim)
        self.fc = nn.Linear(config.embed_dim, config.mlp_dim, bias=False)
        self.c_proj = nn.Linear(config.mlp_dim, config.embed_dim, bias=False)

    def forward(self, latents: Tensor) -> Tensor:
        """[b, l, e] -> [b, l, e]"""
        x = steps.layer_norm(latents, self.ln.weight, self.ln.bias)
        return steps.mlp(x, self.fc.weight, self.c_proj.weight)


class PerceiverResampler(nn.Module):
    """context [b, s, e] -> latents [b, l, e]: `depth` blocks of (attention + MLP), then a LayerNorm.

    >>> model = PerceiverResampler(ResamplerConfig.tiny())
    >>> latents, trace = model(torch.randn(1, 257, 32), return_trace=True)
    """

    def __init__(self, config: ResamplerConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = ResamplerConfig(**overrides)
        elif not isinstance(config, ResamplerConfig):
            raise TypeError(f"config must be a ResamplerConfig; got {type(config).__name__}")
        elif overrides:
            config = config.replace(**overrides)
        self.config = config
        # randn like IDEFICS: the latents start as random points, training gives them a role
        self.latents = nn.Parameter(torch.randn(config.n_latents, config.embed_dim))
        self.blocks = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(config), FeedForward(config)]) for _ in range(config.depth)
        )
        self.layer_norm = nn.LayerNorm(config.embed_dim)

    def forward(self, context: Tensor, return_trace: bool = False) -> Tensor | tuple[Tensor, Trace]:
        """[b, s, e] -> [b, l, e]; with return_trace=True also the Trace of what happened inside."""
        check_context(context, self.config, self.latents)
        latents = steps.repeat_latents(self.latents, context.shape[0])  # [b, l, e]
        record = [] if return_trace else None
        for attention, feed_forward in self.blocks:
            update, scores, attn = attention(context, latents)
            latents = steps.add_residual(latents, update)
            latents = steps.add_residual(latents, feed_forward(latents))
            if record is not None:
                record.append((attn.detach(), scores.detach(), latents.detach()))
        output = steps.layer_norm(latents, self.layer_norm.weight, self.layer_norm.bias)  # [b, l, e]
        if record is None:
            return output
        attentions, scores, per_layer = (tuple(x) for x in zip(*record))
        trace = Trace(attentions, scores, per_layer, context_length=context.shape[1],
                      latents_in_kv=self.config.latents_in_kv)
        return output, trace

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.to_dict().items())

    # -- Hugging Face interop (implemented in interop.py) --------------------------------------
    @classmethod
    def from_idefics(cls, hf_resampler: nn.Module) -> "PerceiverResampler":
        """A copy of a transformers `IdeficsPerceiverResampler`, same weights, same outputs."""
        from .interop import from_idefics

        return from_idefics(hf_resampler)

    def to_idefics_state_dict(self) -> dict[str, Tensor]:
        """The weights under the keys transformers uses, ready for `IdeficsPerceiverResampler.load_state_dict`."""
        from .interop import to_idefics_state_dict

        return to_idefics_state_dict(self)


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


def check_context(context: Any, config: ResamplerConfig, like: Tensor) -> None:
    """Refuse a context the resampler cannot use, with a message that says what to change."""
    if not isinstance(context, Tensor):
        raise TypeError(f"context must be a torch.Tensor of shape [b, s, e]; got {type(context).__name__}")
    if context.dim() != 3:
        hint = " For a single example add a batch axis: context[None]." if context.dim() == 2 else ""
        raise ValueError(
            f"context must be 3-D [b, s, e] (batch, context length, embed_dim); "
            f"got shape {tuple(context.shape)} with {context.dim()} dims.{hint}"
        )
    if context.shape[-1] != config.embed_dim:
        raise ValueError(f"context has embed_dim {context.shape[-1]} but the resampler expects {config.embed_dim}")
    if not context.is_floating_point():
        raise TypeError(
            f"context must hold floating-point numbers; got dtype {context.dtype}. Convert it with context.float()"
        )
    if context.device != like.device:
        raise ValueError(
            f"context is on {context.device} but the resampler is on {like.device}; "
            f"move one of them, e.g. context.to('{like.device}')"
        )
    if context.dtype != like.dtype:
        raise TypeError(
            f"context has dtype {context.dtype} but the resampler's weights are {like.dtype}; "
            f"convert one of them, e.g. context.to({like.dtype})"
        )
    if config.check_finite and context.numel():
        bad = ~torch.isfinite(context)
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"context has {int(bad.sum())} NaN or infinite value(s), the first at index {first}; "
                "one NaN would turn every attention map into NaN. Clean the input, "
                "or build the model with ResamplerConfig(check_finite=False) to skip this check"
            )
