"""Checks of a learner's input, with messages that name the argument, what was expected and what came."""

from __future__ import annotations

from typing import Any


def check_positive_int(name: str, value: Any) -> int:
    """Refuse anything but a positive int (bools too, though Python counts them as ints)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value
