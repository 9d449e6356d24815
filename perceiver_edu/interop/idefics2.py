"""Hugging Face Idefics2 (`transformers.models.idefics2.modeling_idefics2.Idefics2PerceiverResampler`).

What differs from IDEFICS, each a seam of `ResamplerConfig` (see `ResamplerConfig.idefics2()`):
RMSNorm (weight only, eps `rms_norm_eps`), a SwiGLU MLP (`gate_proj, up_proj, down_proj`),
`num_key_value_heads` k/v heads (grouped-query), latents that start as ones, an `attention_mask`
[b, s] over the context (the latents are never masked), and a softmax without explicit max
subtraction. Inside a full Idefics2 checkpoint the resampler sits under
`model.connector.perceiver_resampler.`. Idefics2 calls it as `resampler(context, attention_mask)`;
ours is `model(context, attention_mask=mask)`, and the mask may be left out (no padding).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..config import ResamplerConfig
from ..modules import PerceiverResampler
from .common import build, detached, rename, require, wrong_module

NAME = "Idefics2"
KEYS = (
    ("latents", "latents"),
    ("blocks.{i}.0.latents_layer_norm.weight", "layers.{i}.input_latents_norm.weight"),
    ("blocks.{i}.0.context_layer_norm.weight", "layers.{i}.input_context_norm.weight"),
    ("blocks.{i}.0.q_proj.weight", "layers.{i}.self_attn.q_proj.weight"),
    ("blocks.{i}.0.k_proj.weight", "layers.{i}.self_attn.k_proj.weight"),
    ("blocks.{i}.0.v_proj.weight", "layers.{i}.self_attn.v_proj.weight"),
    ("blocks.{i}.0.output_proj.weight", "layers.{i}.self_attn.o_proj.weight"),
    ("blocks.{i}.1.ln.weight", "layers.{i}.post_attention_layernorm.weight"),
    ("blocks.{i}.1.gate_proj.weight", "layers.{i}.mlp.gate_proj.weight"),
    ("blocks.{i}.1.up_proj.weight", "layers.{i}.mlp.up_proj.weight"),
    ("blocks.{i}.1.down_proj.weight", "layers.{i}.mlp.down_proj.weight"),
    ("layer_norm.weight", "norm.weight"),
)


def config_from_perceiver_config(perceiver: Any, **overrides: Any) -> ResamplerConfig:
    """Our config from an `Idefics2PerceiverConfig` (or its dict, as in config.json's `perceiver_config`)."""
    cfg = perceiver.to_dict() if hasattr(perceiver, "to_dict") else dict(perceiver)
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(
            f"the Idefics2 resampler's hidden_act is {act!r}; only 'silu' (SwiGLU, as Idefics2 ships) is supported"
        )
    try:
        n_heads = cfg.get("resampler_n_heads", 16)
        values = dict(
            embed_dim=cfg["hidden_size"],
            depth=cfg.get("resampler_depth", 3),
            n_heads=n_heads,
            head_dim=cfg.get("resampler_head_dim", 96),
            n_latents=cfg.get("resampler_n_latents", 64),
            n_kv_heads=cfg.get("num_key_value_heads", 4),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        )
    except KeyError as missing:
        raise ValueError(f"the Idefics2 perceiver config is missing {missing}") from None
    if values["n_kv_heads"] == n_heads:
        values["n_kv_heads"] = None  # plain multi-head attention: say so the way the other presets do
    return ResamplerConfig.idefics2(**{**values, **overrides})


def from_idefics2(hf_resampler: nn.Module) -> PerceiverResampler:
    """A PerceiverResampler with the architecture and weights of a transformers Idefics2PerceiverResampler."""
    if not isinstance(hf_resampler, nn.Module) or type(hf_resampler).__name__ != "Idefics2PerceiverResampler":
        raise wrong_module(
            "hf_resampler",
            "a transformers Idefics2PerceiverResampler",
            hf_resampler,
            " (e.g. model.model.connector.perceiver_resampler)",
        )
    config = config_from_perceiver_config(hf_resampler.config)
    state = rename(dict(hf_resampler.state_dict()), KEYS, config.depth, to_ours=True)
    return build(config, state, hf_resampler.latents)


def to_idefics2(model: PerceiverResampler) -> dict[str, Tensor]:
    """Our weights under Idefics2PerceiverResampler's keys (detached), loadable with strict=True."""
    require(
        model, NAME, norm="rms", mlp="swiglu", qk_norm=False, latents_in_kv=True, n_media_embeds=0, n_frame_embeds=0
    )
    return detached(rename(model.state_dict(), KEYS, model.config.depth, to_ours=False))


def ours_from_checkpoint(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An Idefics2 checkpoint's resampler tensors (prefix removed) under our keys."""
    import re

    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))), default=-1)
    return rename(state, KEYS, depth, to_ours=True)


def config_from_checkpoint(state: dict[str, Tensor], hf_config: dict | None, overrides: dict) -> ResamplerConfig:
    """The config of an Idefics2 checkpoint's resampler, from config.json's `perceiver_config`."""
    if hf_config is None or not isinstance(hf_config.get("perceiver_config"), dict):
        raise ValueError("an Idefics2 checkpoint needs its config.json (with 'perceiver_config') beside the weights")
    perceiver = dict(hf_config["perceiver_config"])
    if "hidden_size" not in perceiver and "latents" in state:
        perceiver["hidden_size"] = int(state["latents"].shape[1])
    return config_from_perceiver_config(perceiver, **overrides)
