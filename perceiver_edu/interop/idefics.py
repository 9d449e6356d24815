"""Hugging Face IDEFICS (`transformers.models.idefics.perceiver.IdeficsPerceiverResampler`).

Our modules name their parameters as IDEFICS does, so its state dict moves across unchanged:
`latents`, `blocks.{i}.0.{context_layer_norm,latents_layer_norm,q_proj,k_proj,v_proj,output_proj}`,
`blocks.{i}.0.{q_layer_norm,k_layer_norm}` (only with qk norm), `blocks.{i}.1.{ln,fc,c_proj}`,
`layer_norm`. Inside a full IDEFICS checkpoint they sit under `model.perceiver_resampler.`.
"""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor, nn

from ..config import ResamplerConfig
from ..modules import PerceiverResampler
from .common import build, detached, require, wrong_module

NAME = "IDEFICS"
# what an IDEFICS resampler is, in our config's terms (every other seam at its IDEFICS default)
SEAMS = dict(
    norm="layer",
    mlp="relu",
    n_kv_heads=None,
    latents_init="randn",
    n_media_embeds=0,
    n_frame_embeds=0,
    accepts_mask=False,
    subtract_max=True,
    norm_eps=None,
    latents_in_kv=True,
)


def from_idefics(hf_resampler: nn.Module) -> PerceiverResampler:
    """A PerceiverResampler with the architecture and weights of a transformers IdeficsPerceiverResampler."""
    needed = ("embed_dim", "n_heads", "head_dim", "n_latents", "blocks", "latents")
    if not isinstance(hf_resampler, nn.Module) or not all(hasattr(hf_resampler, name) for name in needed):
        raise wrong_module(
            "hf_resampler",
            "a transformers IdeficsPerceiverResampler",
            hf_resampler,
            " (e.g. model.model.perceiver_resampler)",
        )
    config = ResamplerConfig(
        embed_dim=int(hf_resampler.embed_dim),
        depth=len(hf_resampler.blocks),
        n_heads=int(hf_resampler.n_heads),
        head_dim=int(hf_resampler.head_dim),
        n_latents=int(hf_resampler.n_latents),
        qk_norm=bool(getattr(hf_resampler, "qk_layer_norms", False)),
    )
    return build(config, dict(hf_resampler.state_dict()), hf_resampler.latents)


def to_idefics(model: PerceiverResampler) -> dict[str, Tensor]:
    """Our weights under transformers' keys (a plain dict of tensors, detached)."""
    require(model, NAME, **{k: v for k, v in SEAMS.items() if k not in ("accepts_mask", "subtract_max", "norm_eps")})
    return detached(model.state_dict())


def config_from_idefics(hf_config: Any, **overrides: Any) -> ResamplerConfig:
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
    return ResamplerConfig(**{**values, **overrides})


def ours_from_checkpoint(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An IDEFICS checkpoint's resampler tensors (prefix removed) under our keys: the same keys."""
    return state


def config_from_checkpoint(state: dict[str, Tensor], hf_config: dict | None, overrides: dict) -> ResamplerConfig:
    """The config of an IDEFICS checkpoint's resampler: config.json's sizes, checked against the tensors' shapes."""
    if "latents" not in state:
        raise ValueError("the checkpoint's resampler has no 'latents' tensor; cannot tell n_latents and embed_dim")
    n_latents, embed_dim = state["latents"].shape
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    qk_norm = "blocks.0.0.q_layer_norm.weight" in state
    inner = state["blocks.0.0.q_proj.weight"].shape[0] if "blocks.0.0.q_proj.weight" in state else None
    from_shapes: dict[str, Any] = dict(embed_dim=int(embed_dim), n_latents=int(n_latents), depth=depth, qk_norm=qk_norm)
    if qk_norm:
        head_dim = int(state["blocks.0.0.q_layer_norm.weight"].shape[0])
        from_shapes.update(head_dim=head_dim, n_heads=inner // head_dim)

    values: dict[str, Any] = {}
    if hf_config is not None:
        values = config_from_idefics(hf_config).to_dict()
        disagree = [
            f"{k}: config.json says {values[k]}, tensors say {v}" for k, v in from_shapes.items() if values[k] != v
        ]
        if disagree:
            raise ValueError("config.json does not match the checkpoint's tensors: " + "; ".join(disagree))
    values.update(from_shapes)
    values.update(overrides)
    if "n_heads" not in values or "head_dim" not in values:
        if "n_heads" in values and inner is not None:
            values["head_dim"] = inner // values["n_heads"]
        elif "head_dim" in values and inner is not None:
            values["n_heads"] = inner // values["head_dim"]
        else:
            raise ValueError(
                f"cannot tell n_heads and head_dim apart from the tensors alone (n_heads * head_dim = {inner}); "
                "put the checkpoint's config.json beside it, or pass n_heads=..."
            )
    if inner is not None and values["n_heads"] * values["head_dim"] != inner:
        raise ValueError(
            f"n_heads * head_dim = {values['n_heads']} * {values['head_dim']} does not match the q_proj width {inner}"
        )
    return ResamplerConfig(**{k: values[k] for k in ResamplerConfig.__dataclass_fields__ if k in values})
