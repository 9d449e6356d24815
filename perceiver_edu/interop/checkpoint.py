"""Reading the resampler out of a local Hugging Face checkpoint: IDEFICS or Idefics2, by config.json's model_type.

Checkpoints are read with safetensors, or with `torch.load(weights_only=True)` for `.bin` files:
never by unpickling arbitrary objects. Only the resampler's tensors are read, not the whole model:
with a sharded checkpoint, only the shards that hold them are opened. The resampler sits under
`model.perceiver_resampler.` (IDEFICS) or `model.connector.perceiver_resampler.` (Idefics2); each
family's module (idefics.py, idefics2.py) renames its keys and reads its config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..modules import PerceiverResampler
from . import idefics, idefics2
from .common import load_state_dict_strict

PREFIX = "perceiver_resampler."
FAMILIES = {"idefics": idefics, "idefics2": idefics2}
# families that have no Perceiver Resampler, and what they use instead
NO_RESAMPLER = {
    "idefics3": "Idefics3 replaced the resampler with a pixel shuffle (space-to-depth) and a linear projection",
    "smolvlm": "SmolVLM (built on Idefics3) uses a pixel shuffle and a linear projection instead of a resampler",
}


def load_checkpoint(path: str | Path, **overrides: Any) -> PerceiverResampler:
    """The perceiver resampler of a local IDEFICS or Idefics2 checkpoint: a file, or a (sharded) folder.

    path       a `.safetensors` or `.bin` file, or a folder holding `model.safetensors`,
               `model.safetensors.index.json` (sharded), `pytorch_model.bin` or its index,
               usually beside a `config.json` (as written by transformers' `save_pretrained`)
    overrides  ResamplerConfig fields to use where neither config.json nor the tensor shapes say
               (n_heads, when an IDEFICS checkpoint has no config.json and no qk norm)

    The family comes from `model_type` in the config.json beside the weights (without one, the keys
    tell IDEFICS' `blocks.` from Idefics2's `layers.`); sizes come from config.json when there is one,
    checked against the tensors' shapes. Idefics3 and SmolVLM have no resampler and get a message
    that says so.
    """
    path = _existing(path)
    hf_config = _read_config(path)
    model_type = (hf_config or {}).get("model_type")
    if model_type in NO_RESAMPLER:
        raise ValueError(
            f"{path} is a {model_type!r} checkpoint, which has no Perceiver Resampler: {NO_RESAMPLER[model_type]}. "
            "Chapter 5 shows that design (steps to count its tokens); there are no resampler weights to load"
        )
    if model_type is not None and model_type not in FAMILIES:
        raise ValueError(
            f"{path} has model_type {model_type!r}; load_checkpoint reads the resampler of "
            f"{' or '.join(repr(k) for k in FAMILIES)} checkpoints"
        )
    state = _resampler_state(path)
    if model_type is None:  # no config.json: tell the layouts apart by their keys
        model_type = "idefics2" if any(k.startswith("layers.") for k in state) else "idefics"
    return _build(FAMILIES[model_type], state, hf_config, overrides)


def _build(family, state: dict[str, Tensor], hf_config: dict | None, overrides: dict) -> PerceiverResampler:
    ours = family.ours_from_checkpoint(state)
    config = family.config_from_checkpoint(ours, hf_config, overrides)
    model = PerceiverResampler(config).to(dtype=ours["latents"].dtype if "latents" in ours else torch.float32)
    load_state_dict_strict(model, ours)
    return model


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {str(path)!r} does not exist; expected a checkpoint file or folder")
    return path


def _read_config(path: Path) -> dict | None:
    config_file = (path if path.is_dir() else path.parent) / "config.json"
    if not config_file.is_file():
        return None
    try:
        return json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {config_file}: it is not valid JSON ({err})") from None


def _resampler_state(path: Path) -> dict[str, Tensor]:
    state = _read_resampler_tensors(_checkpoint_files(path))
    if not state:
        raise ValueError(
            f"no perceiver resampler weights in {path}: no key contains '{PREFIX}'. Was the model saved with "
            "use_resampler=True? (IDEFICS checkpoints without a resampler feed the vision tokens directly)"
        )
    return state


def _checkpoint_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix not in (".safetensors", ".bin"):
            raise ValueError(f"path must be a .safetensors or .bin file (or a folder); got {path.name!r}")
        return [path]
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
                raise ValueError(
                    f"cannot read the shard index {index}: expected JSON with a 'weight_map' ({err!r})"
                ) from None
            # open only the shards that hold resampler tensors
            shards = sorted({shard for key, shard in weight_map.items() if PREFIX in key or key.startswith("latents")})
            absent = [shard for shard in shards if not (path / shard).is_file()]
            if absent:
                raise FileNotFoundError(f"{index.name} lists shard(s) that are not in {path}: {', '.join(absent)}")
            return [path / shard for shard in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return [path / name]
    found = sorted(p.name for p in path.iterdir())[:10]
    raise FileNotFoundError(
        f"no checkpoint weights in folder {str(path)!r}: expected model.safetensors, model.safetensors.index.json, "
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
        try:
            state.update(_read_file(file))
        except Exception as err:  # safetensors, torch and pickle each raise their own kinds
            if "weights_only" in str(err) or "Unsupported global" in str(err):
                raise  # a .bin that is more than tensors: torch's own message says why it was refused
            raise ValueError(
                f"cannot read checkpoint file {file}: it looks truncated or corrupt ({type(err).__name__}: {err}). "
                "Download or save it again"
            ) from None
    return state


def _read_file(file: Path) -> dict[str, Tensor]:
    found: dict[str, Tensor] = {}
    if file.suffix == ".safetensors":
        import safetensors  # looked up at call time, so a test can watch what is opened

        with safetensors.safe_open(str(file), framework="pt") as f:
            keys = list(f.keys())
            # a bare resampler file (our own export) has no prefix
            bare = not any(PREFIX in k for k in keys) and "latents" in keys
            for key in keys:
                name = key if bare else _resampler_key(key)
                if name is not None:
                    found[name] = f.get_tensor(key)  # reads this tensor only
    else:
        loaded = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        bare = not any(PREFIX in k for k in loaded) and "latents" in loaded
        for key, value in loaded.items():
            name = key if bare else _resampler_key(key)
            if name is not None:
                found[name] = value
    return found
