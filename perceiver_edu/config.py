"""ResamplerConfig: the handful of numbers that define a Perceiver Resampler.

Names follow the IDEFICS constructor (`embed_dim, depth, n_heads, head_dim, n_latents`) so that a
learner moving between this project and transformers recognises them. `qk_norm` is what IDEFICS
calls `qk_layer_norms_perceiver`. `latents_in_kv` is this project's ablation switch: IDEFICS and
Flamingo always let the latents join the keys/values; turning it off gives plain cross-attention.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

_SIZES = ("embed_dim", "depth", "n_heads", "head_dim", "n_latents")
_SWITCHES = ("qk_norm", "latents_in_kv", "check_finite")


@dataclass(frozen=True)
class ResamplerConfig:
    """The architecture of one Perceiver Resampler.

    embed_dim     e: width of the context tokens, and of the latents that come out
    depth         number of blocks (attention + MLP), each with its own weights
    n_heads       h: attention heads per block
    head_dim      d: width of each head (IDEFICS does not tie it to embed_dim: h * d may differ from e)
    n_latents     l: how many tokens the context is compressed to
    qk_norm       LayerNorm over d on queries and keys before the scores (IDEFICS: qk_layer_norms_perceiver)
    latents_in_kv let the latents join the keys/values (True in IDEFICS and Flamingo)
    check_finite  refuse a context with NaN/inf instead of letting it turn every attention map into NaN
    """

    embed_dim: int = 64
    depth: int = 2
    n_heads: int = 4
    head_dim: int = 16
    n_latents: int = 8
    qk_norm: bool = False
    latents_in_kv: bool = True
    check_finite: bool = True

    def __post_init__(self) -> None:
        for name in _SIZES:
            value = getattr(self, name)
            # bool is an int in Python; ResamplerConfig(depth=True) is almost certainly a mistake.
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be a positive int; got {value!r} ({type(value).__name__})")
            if value <= 0:
                raise ValueError(f"{name} must be a positive int; got {value}")
        for name in _SWITCHES:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False; got {value!r} ({type(value).__name__})")

    # -- derived sizes ------------------------------------------------------------------------
    @property
    def inner_dim(self) -> int:
        """h * d: the width of q, k and v before the heads are split."""
        return self.n_heads * self.head_dim

    @property
    def mlp_dim(self) -> int:
        """4 * e: the hidden width of the MLP, as in IDEFICS."""
        return 4 * self.embed_dim

    def replace(self, **changes: Any) -> "ResamplerConfig":
        """A copy with some fields changed (validated like a new config)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"ResamplerConfig has no field(s) {unknown}; fields are {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # -- presets ------------------------------------------------------------------------------
    @classmethod
    def idefics(cls, **overrides: Any) -> "ResamplerConfig":
        """The resampler of IDEFICS-9B/80B: ViT-H/14 width 1280, depth 6, 16 heads of 96, 64 latents."""
        return cls(**{**dict(embed_dim=1280, depth=6, n_heads=16, head_dim=96, n_latents=64), **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> "ResamplerConfig":
        """Small enough to print, plot and run in milliseconds on a laptop CPU."""
        return cls(**{**dict(embed_dim=32, depth=2, n_heads=4, head_dim=8, n_latents=8), **overrides})

    @classmethod
    def from_idefics(cls, hf_config: Any, **overrides: Any) -> "ResamplerConfig":
        """Read the resampler's sizes from a transformers `IdeficsConfig` (or its dict form, as in config.json)."""
        cfg = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
        perceiver = cfg.get("perceiver_config")
        vision = cfg.get("vision_config")
        if not isinstance(perceiver, dict) or not isinstance(vision, dict):
            raise ValueError(
                "hf_config must be an IdeficsConfig (or its dict) with 'perceiver_config' and 'vision_config'; "
                f"got keys {sorted(cfg)[:12]}"
            )
        try:
            values = dict(
                embed_dim=vision["embed_dim"],
                depth=perceiver["resampler_depth"],
                n_heads=perceiver["resampler_n_heads"],
                head_dim=perceiver["resampler_head_dim"],
                n_latents=perceiver["resampler_n_latents"],
                qk_norm=bool(perceiver.get("qk_layer_norms_perceiver", False)),
            )
        except KeyError as missing:
            raise ValueError(f"hf_config is missing {missing}, which the resampler's size is read from") from None
        return cls(**{**values, **overrides})
