"""lucidrains' flamingo-pytorch (`flamingo_pytorch.PerceiverResampler`), the first open Flamingo.

What differs from IDEFICS: a GELU MLP (an `nn.Sequential` of LayerNorm, Linear, GELU, Linear, so its
weights are `layers.{i}.1.{0,1,3}`), k and v fused into one `to_kv` projection (split here into our
k_proj and v_proj, and joined again on export), and `media_pos_emb` [m, 1, e], a learned embedding
per media that is always there and always added. It takes x [b, m, s, e] (or [b, s, e], read as one
media) and returns [b, m, l, e]; ours takes and returns the same ([b, s, e] -> [b, l, e]).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..config import ResamplerConfig
from ..modules import PerceiverResampler
from .common import build, detached, join_kv, rename, require, split_kv, wrong_module

NAME = "flamingo-pytorch"
# the layout both Flamingo codes share; k_proj/v_proj appear here as the fused to_kv
FLAMINGO_KEYS = (
    ("latents", "latents"),
    ("blocks.{i}.0.context_layer_norm.weight", "layers.{i}.0.norm_media.weight"),
    ("blocks.{i}.0.context_layer_norm.bias", "layers.{i}.0.norm_media.bias"),
    ("blocks.{i}.0.latents_layer_norm.weight", "layers.{i}.0.norm_latents.weight"),
    ("blocks.{i}.0.latents_layer_norm.bias", "layers.{i}.0.norm_latents.bias"),
    ("blocks.{i}.0.q_proj.weight", "layers.{i}.0.to_q.weight"),
    ("blocks.{i}.0.to_kv.weight", "layers.{i}.0.to_kv.weight"),
    ("blocks.{i}.0.output_proj.weight", "layers.{i}.0.to_out.weight"),
    ("blocks.{i}.1.ln.weight", "layers.{i}.1.0.weight"),
    ("blocks.{i}.1.ln.bias", "layers.{i}.1.0.bias"),
    ("blocks.{i}.1.fc.weight", "layers.{i}.1.1.weight"),
    ("blocks.{i}.1.c_proj.weight", "layers.{i}.1.3.weight"),
    ("layer_norm.weight", "norm.weight"),
    ("layer_norm.bias", "norm.bias"),
)
KEYS = FLAMINGO_KEYS + (("media_embeds", "media_pos_emb"),)
# what both Flamingo codes fix, in our config's terms
FLAMINGO_SEAMS = dict(norm="layer", mlp="gelu", n_kv_heads=None, qk_norm=False, latents_in_kv=True)


def flamingo_config(resampler: nn.Module, **sizes: int) -> ResamplerConfig:
    """The sizes both Flamingo codes keep on their modules: depth from `layers`, heads from the first attention."""
    attention, feed_forward = resampler.layers[0]
    n_latents, embed_dim = resampler.latents.shape
    n_heads = int(attention.heads)
    hidden = feed_forward[1].out_features
    if hidden != 4 * embed_dim:
        raise ValueError(
            f"the resampler's MLP is {hidden} wide (ff_mult={hidden / embed_dim:g}); only ff_mult=4 is supported"
        )
    return ResamplerConfig(
        embed_dim=int(embed_dim),
        depth=len(resampler.layers),
        n_heads=n_heads,
        head_dim=attention.to_q.out_features // n_heads,
        n_latents=int(n_latents),
        mlp="gelu",
        **sizes,
    )


def flamingo_to_ours(state: dict[str, Tensor], keys, depth: int) -> dict[str, Tensor]:
    """Their state dict -> ours: rename, split to_kv, and [m, 1, e] time embeddings -> [m, e]."""
    ours = split_kv(rename(state, keys, depth, to_ours=True), depth)
    if "media_embeds" in ours:
        ours["media_embeds"] = ours["media_embeds"].squeeze(1)
    return ours


def ours_to_flamingo(model: PerceiverResampler, keys) -> dict[str, Tensor]:
    """Our state dict -> theirs: join k/v into to_kv, [m, e] -> [m, 1, e], rename."""
    depth = model.config.depth
    state = join_kv(dict(model.state_dict()), depth)
    if "media_embeds" in state:
        state["media_embeds"] = state["media_embeds"][:, None]
    return detached(rename(state, keys, depth, to_ours=False))


def from_flamingo_pytorch(resampler: nn.Module) -> PerceiverResampler:
    """A PerceiverResampler with the architecture and weights of a flamingo_pytorch.PerceiverResampler."""
    if not (isinstance(resampler, nn.Module) and hasattr(resampler, "media_pos_emb") and hasattr(resampler, "layers")):
        raise wrong_module("resampler", "a flamingo_pytorch.PerceiverResampler (with media_pos_emb)", resampler)
    config = flamingo_config(resampler, n_media_embeds=int(resampler.media_pos_emb.shape[0]))
    state = flamingo_to_ours(dict(resampler.state_dict()), KEYS, config.depth)
    return build(config, state, resampler.latents)


def to_flamingo_pytorch(model: PerceiverResampler) -> dict[str, Tensor]:
    """Our weights under flamingo-pytorch's keys (detached), loadable with strict=True."""
    require(model, NAME, **FLAMINGO_SEAMS, n_frame_embeds=0)
    if not model.config.n_media_embeds:
        raise ValueError(
            "flamingo-pytorch always has media_pos_emb (num_media_embeds >= 1) but this model has n_media_embeds=0; "
            "build it with n_media_embeds=1 or more to export it"
        )
    return ours_to_flamingo(model, KEYS)
