"""ResamplerConfig: the handful of numbers that define a Perceiver Resampler.

Names follow the IDEFICS constructor (`embed_dim, depth, n_heads, head_dim, n_latents`) so that a
learner moving between this project and transformers recognises them. `qk_norm` is what IDEFICS
calls `qk_layer_norms_perceiver`. `latents_in_kv` is this project's ablation switch: IDEFICS and
Flamingo always let the latents join the keys/values; turning it off gives plain cross-attention.

The relatives of the resampler (Flamingo, OpenFlamingo, IDEFICS, Idefics2) differ in a few places,
and each difference is one field here, a *seam*: the norm, the MLP, the number of key/value heads,
how the latents start, media and frame embeddings, a padding mask, the softmax's max subtraction.
The defaults are IDEFICS; the presets `idefics()`, `idefics2()`, `flamingo()` and `tiny()` set them
all at once. `modules.py` reads the seams once, when it builds the parts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from . import checks

_SIZES = ("embed_dim", "depth", "n_heads", "head_dim", "n_latents")
_SWITCHES = ("qk_norm", "latents_in_kv", "accepts_mask", "subtract_max")
_COUNTS = ("n_media_embeds", "n_frame_embeds")
# the allowed values of each seam that is a choice, in the order the docs list them
CHOICES = {
    "norm": ("layer", "rms"),
    "mlp": ("relu", "gelu", "swiglu"),
    "latents_init": ("randn", "ones"),
}


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

    The family's seams (defaults = IDEFICS):
    norm          "layer" (LayerNorm, weight and bias) or "rms" (RMSNorm, weight only, computed in float32: Idefics2)
    mlp           "relu" (IDEFICS), "gelu" (Flamingo) or "swiglu" (Idefics2: down(silu(gate(x)) * up(x))), all 4e wide
    n_kv_heads    g: key/value heads; None = n_heads. Fewer is grouped-query attention (Idefics2: 4 for 16
                  query heads): each k/v head serves n_heads // n_kv_heads query heads
    latents_init  "randn" (IDEFICS, Flamingo) or "ones" (Idefics2): how the learned latents start
    n_media_embeds  m: learned embeddings, one per image/video frame time step, added to every token of that
                  media (Flamingo's media_pos_emb, OpenFlamingo's media_time_embs); 0 = none
    n_frame_embeds  f: learned embeddings, one per frame inside a media (OpenFlamingo's frame_embs); 0 = none
    accepts_mask  take an attention_mask [b, s] (1 = real token, 0 = padding) in forward (Idefics2)
    subtract_max  subtract each score row's max before the softmax explicitly (IDEFICS, Flamingo); False
                  calls softmax directly, in float32, as Idefics2's attention function does
    norm_eps      the norms' epsilon; None = 1e-5 for "layer" (torch's default), 1e-6 for "rms" (Idefics2)
    """

    embed_dim: int = 64
    depth: int = 2
    n_heads: int = 4
    head_dim: int = 16
    n_latents: int = 8
    qk_norm: bool = False
    latents_in_kv: bool = True
    norm: str = "layer"
    mlp: str = "relu"
    n_kv_heads: int | None = None
    latents_init: str = "randn"
    n_media_embeds: int = 0
    n_frame_embeds: int = 0
    accepts_mask: bool = False
    subtract_max: bool = True
    norm_eps: float | None = None

    def __post_init__(self) -> None:
        for name in _SIZES:
            checks.positive_int(name, getattr(self, name))
        for name in _SWITCHES:
            checks.boolean(name, getattr(self, name))
        for name, allowed in CHOICES.items():
            checks.one_of(name, getattr(self, name), allowed)
        for name in _COUNTS:
            checks.nonnegative_int(name, getattr(self, name), " (0 = no such embeddings)")
        kv = self.n_kv_heads
        if kv is not None:
            if not checks.is_int(kv) or kv <= 0:
                raise ValueError(f"n_kv_heads must be None (= n_heads) or a positive int; got {kv!r}")
            if self.n_heads % kv:
                raise ValueError(
                    f"n_kv_heads must divide n_heads (each k/v head serves n_heads // n_kv_heads query heads); "
                    f"got n_heads={self.n_heads}, n_kv_heads={kv}"
                )
        eps = self.norm_eps
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0):
            raise ValueError(f"norm_eps must be None or a positive number; got {eps!r}")

    # -- derived sizes ------------------------------------------------------------------------
    @property
    def inner_dim(self) -> int:
        """h * d: the width of q, k and v before the heads are split."""
        return self.n_heads * self.head_dim

    @property
    def kv_heads(self) -> int:
        """g: the number of key/value heads (n_kv_heads, or n_heads when that is None)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def kv_dim(self) -> int:
        """g * d: the width of k and v before the heads are split (smaller than inner_dim with grouped-query)."""
        return self.kv_heads * self.head_dim

    @property
    def eps(self) -> float:
        """The norms' epsilon: norm_eps, or the default of the norm kind (LayerNorm 1e-5, RMSNorm 1e-6)."""
        if self.norm_eps is not None:
            return float(self.norm_eps)
        return 1e-6 if self.norm == "rms" else 1e-5

    @property
    def mlp_dim(self) -> int:
        """4 * e: the hidden width of the MLP, as in IDEFICS."""
        return 4 * self.embed_dim

    def replace(self, **changes: Any) -> ResamplerConfig:
        """A copy with some fields changed (validated like a new config)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(
                f"ResamplerConfig has no field(s) {unknown}; fields are {[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # -- presets ------------------------------------------------------------------------------
    @classmethod
    def idefics(cls, **overrides: Any) -> ResamplerConfig:
        """The resampler of IDEFICS-9B/80B: ViT-H/14 width 1280, depth 6, 16 heads of 96, 64 latents."""
        return cls(**{**dict(embed_dim=1280, depth=6, n_heads=16, head_dim=96, n_latents=64), **overrides})

    @classmethod
    def idefics2(cls, **overrides: Any) -> ResamplerConfig:
        """The resampler of Idefics2-8B: Mistral width 4096, depth 3, 16 query heads of 96, 4 k/v heads,
        64 latents starting as ones, RMSNorm, SwiGLU, a padding mask, no explicit max subtraction."""
        values = dict(
            embed_dim=4096,
            depth=3,
            n_heads=16,
            head_dim=96,
            n_latents=64,
            n_kv_heads=4,
            norm="rms",
            mlp="swiglu",
            latents_init="ones",
            accepts_mask=True,
            subtract_max=False,
        )
        return cls(**{**values, **overrides})

    @classmethod
    def flamingo(cls, **overrides: Any) -> ResamplerConfig:
        """The resampler as OpenFlamingo builds it on CLIP ViT-L/14 (width 1024): depth 6, 8 heads of 64,
        64 latents, GELU, no time or frame embeddings (open_flamingo/src/flamingo.py). The Flamingo paper
        also uses 6 layers and 64 latents, and adds learned time embeddings for video: pass
        n_media_embeds=4 for lucidrains' flamingo-pytorch default."""
        values = dict(embed_dim=1024, depth=6, n_heads=8, head_dim=64, n_latents=64, mlp="gelu")
        return cls(**{**values, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> ResamplerConfig:
        """Small enough to print, plot and run in milliseconds on a laptop CPU."""
        return cls(**{**dict(embed_dim=32, depth=2, n_heads=4, head_dim=8, n_latents=8), **overrides})
