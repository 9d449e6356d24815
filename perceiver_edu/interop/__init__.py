"""Weights to and from the other implementations of the resampler: one module per reference, one API.

    from_idefics(m)  / to_idefics(model)           transformers IdeficsPerceiverResampler (same keys as ours)
    from_idefics2(m) / to_idefics2(model)          transformers Idefics2PerceiverResampler (RMSNorm, SwiGLU,
                                                   grouped-query k/v, a padding mask)
    from_flamingo_pytorch(m) / to_flamingo_pytorch(model)   lucidrains' flamingo-pytorch (GELU, fused to_kv,
                                                   media_pos_emb)
    from_open_flamingo(m) / to_open_flamingo(model)         OpenFlamingo's helpers.PerceiverResampler (as above,
                                                   media_time_embs, frame_embs)
    load_checkpoint(path)                          the resampler of a local IDEFICS / Idefics2 checkpoint,
                                                   by config.json's model_type
    config_from_idefics(hf_config)                 our config from a transformers IdeficsConfig

`from_x` takes the other implementation's module and returns a `PerceiverResampler` with the same
weights (same outputs); `to_x` takes ours and returns a state dict under the other implementation's
keys, loadable with `load_state_dict(..., strict=True)`. The core (`modules.py`) knows none of this:
the arrows point from here down to it. A fifth relative is one module here (its key table and seams,
see `common.py`) and two lines below.
"""

from __future__ import annotations

from .checkpoint import load_checkpoint
from .common import load_state_dict_strict
from .flamingo_pytorch import from_flamingo_pytorch, to_flamingo_pytorch
from .idefics import config_from_idefics, from_idefics, to_idefics
from .idefics2 import from_idefics2, to_idefics2
from .open_flamingo import from_open_flamingo, to_open_flamingo

__all__ = [
    "config_from_idefics",
    "from_flamingo_pytorch",
    "from_idefics",
    "from_idefics2",
    "from_open_flamingo",
    "load_checkpoint",
    "load_state_dict_strict",
    "to_flamingo_pytorch",
    "to_idefics",
    "to_idefics2",
    "to_open_flamingo",
]
