"""Choosing where the resampler runs: cuda when available, else mps (Apple silicon), else cpu.

Set PERCEIVER_EDU_DEVICE=cpu (or cuda, cuda:1, mps) to force one, e.g. to compare a CPU run on a
GPU machine. The model and its tensors then move with `.to(device)` as usual.
"""

from __future__ import annotations

import os

import torch

ENV_VAR = "PERCEIVER_EDU_DEVICE"


def available_devices() -> list[str]:
    """The devices this machine can run on, best first: e.g. ['cuda', 'cpu']."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


def pick_device() -> str:
    """ "cuda" when available, else "mps", else "cpu"; the environment variable PERCEIVER_EDU_DEVICE overrides."""
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced:
        kind = forced.split(":")[0]
        if kind not in available_devices():
            raise ValueError(
                f"{ENV_VAR}={forced!r} but that device is not available here; available: {available_devices()}"
            )
        return forced
    return available_devices()[0]
