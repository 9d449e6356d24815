"""OpenFlamingo (`open_flamingo/src/helpers.py`, `PerceiverResampler`).

The same layout as flamingo-pytorch (GELU MLP as an `nn.Sequential`, fused `to_kv`; see
`flamingo_pytorch.py`, whose key table this module extends), with two optional embeddings instead of
one: `media_time_embs` [T, 1, e] (`max_num_media`) and `frame_embs` [F, e] (`max_num_frames`). It takes
x [b, T, F, v, e] (T media of F frames of v tokens) and returns [b, T, l, e]; ours does the same.

The open-flamingo package imports open_clip when it is imported, so load `helpers.py` by path
(tests do) rather than `import open_flamingo`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from torch import Tensor, nn

from ..modules import PerceiverResampler
from .common import build, require, wrong_module
from .flamingo_pytorch import FLAMINGO_KEYS, FLAMINGO_SEAMS, flamingo_config, flamingo_to_ours, ours_to_flamingo

NAME = "OpenFlamingo"
INSTALL = 'pip install --no-deps "open-flamingo==2.0.1" einops-exts'


def load_helpers() -> ModuleType:
    """OpenFlamingo's `open_flamingo/src/helpers.py`, loaded by path from the installed package.

    `import open_flamingo` would import open_clip (and open-flamingo pins torch==2.0.1, so it is installed
    with --no-deps, without open_clip); helpers.py itself needs only torch, einops and einops-exts.
    Raises ImportError with the install command when open-flamingo is not installed.
    """
    spec = importlib.util.find_spec("open_flamingo")
    path = (
        Path(list(spec.submodule_search_locations)[0]) / "src" / "helpers.py"
        if spec and spec.submodule_search_locations
        else None
    )
    if path is None or not path.is_file():
        raise ImportError(f"open-flamingo is not installed; install it with: {INSTALL}")
    module_spec = importlib.util.spec_from_file_location("open_flamingo_helpers", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


KEYS = FLAMINGO_KEYS + (("media_embeds", "media_time_embs"), ("frame_embeds", "frame_embs"))


def from_open_flamingo(resampler: nn.Module) -> PerceiverResampler:
    """A PerceiverResampler with the architecture and weights of OpenFlamingo's PerceiverResampler."""
    if not (
        isinstance(resampler, nn.Module) and hasattr(resampler, "media_time_embs") and hasattr(resampler, "frame_embs")
    ):
        raise wrong_module(
            "resampler", "OpenFlamingo's helpers.PerceiverResampler (with media_time_embs, frame_embs)", resampler
        )
    media, frames = resampler.media_time_embs, resampler.frame_embs
    config = flamingo_config(
        resampler,
        n_media_embeds=0 if media is None else int(media.shape[0]),
        n_frame_embeds=0 if frames is None else int(frames.shape[0]),
    )
    state = flamingo_to_ours(dict(resampler.state_dict()), KEYS, config.depth)
    return build(config, state, resampler.latents)


def to_open_flamingo(model: PerceiverResampler) -> dict[str, Tensor]:
    """Our weights under OpenFlamingo's keys (detached), loadable with strict=True into a resampler built with
    max_num_media=n_media_embeds (or None for 0) and max_num_frames=n_frame_embeds (or None for 0)."""
    require(model, NAME, **FLAMINGO_SEAMS)
    return ours_to_flamingo(model, KEYS)
