"""Weights to and from Hugging Face IDEFICS.

Our modules name their parameters as transformers does, so a state dict moves across unchanged:
`latents`, `blocks.{i}.0.{context_layer_norm,latents_layer_norm,q_proj,k_proj,v_proj,output_proj}`,
`blocks.{i}.0.{q_layer_norm,k_layer_norm}` (only with qk norm), `blocks.{i}.1.{ln,fc,c_proj}`,
`layer_norm`. Inside a full IDEFICS checkpoint they sit under `model.perceiver_resampler.`.

Checkpoints are read with safetensors, or with `torch.load(weights_only=True)` for `.bin` files:
never by unpickling arbitrary objects. Only the resampler's tensors are read, not the whole model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import ResamplerConfig
from .modules import PerceiverResampler

PREFIX = "perceiver_resampler."


def from_idefics(hf_resampler: nn.Module) -> PerceiverResampler:
    """A PerceiverResampler with the architecture and weights of a transformers IdeficsPerceiverResampler."""
    needed = ("embed_dim", "n_heads", "head_dim", "n_latents", "blocks", "latents")
    if not all(hasattr(hf_resampler, name) for name in needed):
        raise TypeError(
            "hf_resampler must be a transformers IdeficsPerceiverResampler "
            f"(e.g. model.model.perceiver_resampler); got {type(hf_resampler).__name__}"
        )
    config = ResamplerConfig(
        embed_dim=int(hf_resampler.embed_dim),
        depth=len(hf_resampler.blocks),
        n_heads=int(hf_resampler.n_heads),
        head_dim=int(hf_resampler.head_dim),
        n_latents=int(hf_resampler.n_latents),
        qk_norm=bool(getattr(hf_resampler, "qk_layer_norms", False)),
    )
    reference = hf_resampler.latents
    model = PerceiverResampler(config).to(device=reference.device, dtype=reference.dtype)
    load_state_dict_strict(model, hf_resampler.state_dict())
    return model


def to_idefics_state_dict(model: PerceiverResampler) -> dict[str, Tensor]:
    """Our weights under transformers' keys (a plain dict of tensors, detached)."""
    if not model.config.latents_in_kv:
        raise ValueError(
            "latents_in_kv=False has no IDEFICS counterpart (IDEFICS always lets the latents join the keys/values); "
            "build the model with latents_in_kv=True to export it"
        )
    return {key: value.detach() for key, value in model.state_dict().items()}


def load_state_dict_strict(model: PerceiverResampler, state: dict[str, Tensor]) -> None:
    """Copy `state` into `model`, or say exactly which keys are missing, unexpected or of the wrong shape."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong:
        lines = []
        if missing:
            lines.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if wrong:
            lines.append(f"shapes that do not match ({len(wrong)}): {'; '.join(wrong)}")
        raise ValueError(
            f"the weights do not fit a resampler with {model.config}:\n  " + "\n  ".join(lines)
        )
    model.load_state_dict(state, strict=True)


# -- reading checkpoints --------------------------------------------------------------------------

def load_idefics_checkpoint(path: str | Path, **overrides: Any) -> PerceiverResampler:
    """The perceiver resampler of a local IDEFICS checkpoint: a file, or a (sharded) folder.

    path       a `.safetensors` or `.bin` file, or a folder holding `model.safetensors`,
               `model.safetensors.index.json` (sharded), `pytorch_model.bin` or its index,
               usually beside a `config.json` (as written by transformers' `save_pretrained`)
    overrides  ResamplerConfig fields to use where neither config.json nor the tensor shapes say
               (n_heads, when there is no config.json and no qk norm), or to switch check_finite off

    Sizes come from config.json when there is one, checked against the tensors' shapes.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {str(path)!r} does not exist; expected an IDEFICS checkpoint file or folder")
    files = _checkpoint_files(path)
    state = _read_resampler_tensors(files)
    if not state:
        raise ValueError(
            f"no perceiver resampler weights in {path}: no key contains '{PREFIX}'. Was the model saved with "
            "use_resampler=True? (IDEFICS checkpoints without a resampler feed the vision tokens directly)"
        )
    config_file = (path if path.is_dir() else path.parent) / "config.json"
    hf_config = json.loads(config_file.read_text()) if config_file.is_file() else None
    config = _infer_config(state, hf_config, overrides)
    model = PerceiverResampler(config).to(dtype=state["latents"].dtype if "latents" in state else torch.float32)
    load_state_dict_strict(model, state)
    return model


def _checkpoint_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix not in (".safetensors", ".bin"):
            raise ValueError(f"path must be a .safetensors or .bin file (or a folder); got {path.name!r}")
        return [path]
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            # open only the shards that hold resampler tensors
            shards = sorted({shard for key, shard in weight_map.items() if PREFIX in key or key.startswith("latents")})
            return [path / shard for shard in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return [path / name]
    found = sorted(p.name for p in path.iterdir())[:10]
    raise FileNotFoundError(
        f"no IDEFICS weights in folder {str(path)!r}: expected model.safetensors, model.safetensors.index.json, "
        f"pytorch_model.bin or pytorch_model.bin.index.json; found {found}"
    )


def _resampler_key(key: str) -> str | None:
    """'model.perceiver_resampler.blocks.0.0.q_proj.weight' -> 'blocks.0.0.q_proj.weight'; None for other tensors."""
    if PREFIX in key:
        return key.split(PREFIX, 1)[1]
    return None


def _read_resampler_tensors(files: list[Path]) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                keys = list(f.keys())
                # a bare resampler file (our own export) has no prefix
                bare = not any(PREFIX in k for k in keys) and "latents" in keys
                for key in keys:
                    name = key if bare else _resampler_key(key)
                    if name is not None:
                        state[name] = f.get_tensor(key)  # reads this tensor only
        else:
            loaded = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            bare = not any(PREFIX in k for k in loaded) and "latents" in loaded
            for key, value in loaded.items():
                name = key if bare else _resampler_key(key)
                if name is not None:
                    state[name] = value
    return state


def _infer_config(state: dict[str, Tensor], hf_config: dict | None, overrides: dict) -> ResamplerConfig:
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
        values = ResamplerConfig.from_idefics(hf_config).to_dict()
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
