"""Checks of inputs, each with a message a learner can act on: the argument's name, what was expected, what came.

    positive_int, nonnegative_int, boolean, one_of   arguments and config fields
    context, attention_mask, finite                  what PerceiverResampler.forward is given

They return nothing and raise TypeError (wrong kind of value) or ValueError (right kind, wrong value).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

CONTEXT_SHAPES = "[b, s, e], [b, m, s, e] (m media) or [b, m, f, v, e] (m media of f frames of v tokens)"


def is_int(value: Any) -> bool:
    # bool is an int in Python, but depth=True is almost certainly a mistake
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name: str, value: Any, meaning: str = "") -> None:
    """`value` must be an int > 0; `meaning` (e.g. " (how many scenes)") follows "a positive int" in the message."""
    if not is_int(value):
        raise TypeError(f"{name} must be a positive int{meaning}; got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int{meaning}; got {value!r}")


def nonnegative_int(name: str, value: Any, meaning: str = "") -> None:
    """`value` must be an int >= 0."""
    if not is_int(value) or value < 0:
        raise ValueError(f"{name} must be an int >= 0{meaning}; got {value!r}")


def boolean(name: str, value: Any) -> None:
    """`value` must be True or False (not 1, not "yes")."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r} ({type(value).__name__})")


def one_of(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """`value` must be one of `allowed`, which the message lists."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def context(context: Any, config: Any, like: Tensor) -> None:
    """Refuse a context the resampler of `config`, whose weights are like `like`, cannot use."""
    if not isinstance(context, Tensor):
        raise TypeError(f"context must be a torch.Tensor of shape [b, s, e]; got {type(context).__name__}")
    if context.dim() not in (3, 4, 5):
        hint = " For a single example add a batch axis: context[None]." if context.dim() == 2 else ""
        raise ValueError(
            f"context must be 3-D [b, s, e] (batch, context length, embed_dim), or {CONTEXT_SHAPES}; "
            f"got shape {tuple(context.shape)} with {context.dim()} dims.{hint}"
        )
    if context.shape[-1] != config.embed_dim:
        raise ValueError(f"context has embed_dim {context.shape[-1]} but the resampler expects {config.embed_dim}")
    for axis, name, limit in (
        (1, "media (axis 1)", config.n_media_embeds),
        (2, "frames (axis 2)", config.n_frame_embeds),
    ):
        # embeddings exist for `limit` media/frames; more would have none (0 = no embeddings, any number)
        if context.dim() >= 3 + axis and limit and context.shape[axis] > limit:
            raise ValueError(
                f"context has {context.shape[axis]} {name} but the resampler has embeddings for at most {limit} "
                f"(n_{'media' if axis == 1 else 'frame'}_embeds={limit})"
            )
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


def finite(context: Tensor) -> None:
    """Refuse a context holding NaN or inf: one NaN would turn every attention map into NaN."""
    # one pass first: the sum is finite whenever every entry is (it can overflow, then look closer)
    if context.numel() and not torch.isfinite(context.sum()):
        bad = ~torch.isfinite(context)
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"context has {int(bad.sum())} NaN or infinite value(s), the first at index {first}; "
                "one NaN would turn every attention map into NaN. Clean the input, "
                "or set model.check_finite = False to skip this check"
            )


def attention_mask(mask: Any, context: Tensor, config: Any) -> None:
    """Refuse a padding mask the resampler cannot use: wrong type, shape, values, or an example with no real token."""
    if mask is None:
        return
    if not config.accepts_mask:
        raise ValueError(
            "this resampler takes no attention_mask (IDEFICS and Flamingo attend to every context token); "
            "build it with ResamplerConfig(accepts_mask=True), as Idefics2 is, to use one"
        )
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"attention_mask must be a torch.Tensor of 1s (real tokens) and 0s (padding); got {type(mask).__name__}"
        )
    if context.dim() == 5:
        raise ValueError(
            "attention_mask works with a context [b, s, e] or [b, m, s, e], not with frames [b, m, f, v, e]"
        )
    expected = tuple(context.shape[:-1])
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"attention_mask must have shape {expected} (the context's shape without e: 1 = real token, 0 = padding); "
            f"got {tuple(mask.shape)}"
        )
    if mask.device != context.device:
        raise ValueError(f"attention_mask is on {mask.device} but the context is on {context.device}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("attention_mask must hold only 1 (real token) and 0 (padding)")
    if mask.numel() and context.shape[-2] > 0:
        empty = ~mask.reshape(-1, mask.shape[-1]).bool().any(dim=-1)
        if empty.any():
            which = int(empty.nonzero()[0])
            raise ValueError(
                f"attention_mask marks every token of example {which} (counting media one by one) as padding: "
                "there is nothing to resample. Drop that example before the resampler, as Idefics2Model drops "
                "images made only of padding"
            )
