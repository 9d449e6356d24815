"""What every reference's interop module needs: renaming keys, fused k/v, strict loading, clear refusals.

A reference's module describes itself with a key table: pairs of (our key, its key), where `{i}`
stands for the block number. Renaming a state dict either way is then one function, and a fifth
relative needs only its table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ResamplerConfig
from ..modules import PerceiverResampler

KeyTable = Iterable[tuple[str, str]]


def expand(table: KeyTable, depth: int) -> list[tuple[str, str]]:
    """The table with every `{i}` pair written out for blocks 0 .. depth - 1."""
    pairs = []
    for ours, theirs in table:
        if "{i}" in ours:
            pairs.extend((ours.format(i=i), theirs.format(i=i)) for i in range(depth))
        else:
            pairs.append((ours, theirs))
    return pairs


def rename(state: dict[str, Tensor], table: KeyTable, depth: int, to_ours: bool) -> dict[str, Tensor]:
    """Rename the keys of `state` by `table` (theirs -> ours when to_ours, else ours -> theirs).

    Keys the table does not name are kept as they are, so that `load_state_dict_strict` can list them
    as unexpected rather than having them vanish silently.
    """
    mapping = {t: o for o, t in expand(table, depth)} if to_ours else dict(expand(table, depth))
    return {mapping.get(key, key): value for key, value in state.items()}


def join_kv(state: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """Our k_proj and v_proj [g d, e] each -> one fused `to_kv` [2 g d, e], k rows first (Flamingo's layout)."""
    out = dict(state)
    for i in range(depth):
        k = out.pop(f"blocks.{i}.0.k_proj.weight")
        v = out.pop(f"blocks.{i}.0.v_proj.weight")
        out[f"blocks.{i}.0.to_kv.weight"] = torch.cat([k, v], dim=0)
    return out


def split_kv(state: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """The inverse of `join_kv`: Flamingo computes k, v = to_kv(x).chunk(2, dim=-1), so k is the first half of the rows."""
    out = dict(state)
    for i in range(depth):
        key = f"blocks.{i}.0.to_kv.weight"
        if key in out:
            out[f"blocks.{i}.0.k_proj.weight"], out[f"blocks.{i}.0.v_proj.weight"] = out.pop(key).chunk(2, dim=0)
    return out


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
        raise ValueError(f"the weights do not fit a resampler with {model.config}:\n  " + "\n  ".join(lines))
    model.load_state_dict(state, strict=True)


def build(config: ResamplerConfig, state: dict[str, Tensor], like: Tensor) -> PerceiverResampler:
    """A PerceiverResampler of `config` holding `state` (our keys), on the device and dtype of `like`."""
    model = PerceiverResampler(config).to(device=like.device, dtype=like.dtype)
    load_state_dict_strict(model, state)
    return model.eval()


def detached(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: value.detach() for key, value in state.items()}


def require(model: Any, reference: str, **expected: Any) -> None:
    """Refuse to export a model whose config has no counterpart in `reference`, naming every field that differs."""
    if not isinstance(model, PerceiverResampler):
        raise TypeError(f"model must be a perceiver_edu PerceiverResampler; got {type(model).__name__}")
    cfg = model.config
    wrong = [
        f"{name}={getattr(cfg, name)!r} has no {reference} counterpart ({reference} has {name}={value!r})"
        for name, value in expected.items()
        if getattr(cfg, name) != value
    ]
    if wrong:
        raise ValueError(
            "; ".join(wrong) + ". Build the model with these fields (ResamplerConfig.replace) to export it"
        )


def describe(module: Any) -> str:
    """What a module looks like, for messages: 'IdeficsPerceiverResampler (transformers...)', or its type."""
    kind = type(module)
    return f"{kind.__name__} (from {kind.__module__})"


def wrong_module(argument: str, expected: str, module: Any, hint: str = "") -> TypeError:
    """The error for a module of the wrong kind: what came, what was expected, and where to find the right one."""
    guess = guess_reference(module)
    known = f"; it looks like {guess}'s resampler: use perceiver_edu.interop.from_{guess}" if guess else ""
    return TypeError(f"{argument} must be {expected}{hint}; got {describe(module)}{known}")


def guess_reference(module: Any) -> str | None:
    """Which reference a resampler module comes from, by its attributes (None when it is none of them)."""
    if not isinstance(module, nn.Module):
        return None
    name = type(module).__name__
    if name == "IdeficsPerceiverResampler":
        return "idefics"
    if name == "Idefics2PerceiverResampler":
        return "idefics2"
    if hasattr(module, "layers") and hasattr(module, "latents"):
        if hasattr(module, "media_pos_emb"):
            return "flamingo_pytorch"
        if hasattr(module, "frame_embs") and hasattr(module, "media_time_embs"):
            return "open_flamingo"
    return None
