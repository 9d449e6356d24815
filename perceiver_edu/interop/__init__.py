"""Weights to and from the other implementations of the resampler: one module per reference.

    idefics.py           transformers IdeficsPerceiverResampler (same keys as ours)
    idefics2.py          transformers Idefics2PerceiverResampler (RMSNorm, SwiGLU, grouped-query, mask)
    flamingo_pytorch.py  lucidrains' flamingo-pytorch PerceiverResampler (GELU, fused to_kv, media_pos_emb)
    open_flamingo.py     OpenFlamingo's helpers.PerceiverResampler (as above, media_time_embs, frame_embs)
    checkpoint.py        the resampler of a local IDEFICS / Idefics2 checkpoint, by config.json's model_type
    common.py            key tables, fused k/v, strict loading, the messages for modules of the wrong kind

Why a registry: `PerceiverResampler.from_idefics2(m)` and `model.to_idefics2_state_dict()` are methods
of a core class, but core modules must not import interop (interop imports them: the arrows point
down). So `modules.py` keeps a small table of converters, and this package fills it when it is
imported, which `import perceiver_edu` does. The methods look their converter up by name. (Importing
`perceiver_edu.modules` alone and calling `from_x` imports this package on first use.) A fifth relative
is one module here and one `register_converter` line below.
"""

from __future__ import annotations

from ..modules import Converter, register_converter
from .checkpoint import load_checkpoint, load_idefics_checkpoint
from .common import load_state_dict_strict
from .flamingo_pytorch import from_flamingo_pytorch, to_flamingo_pytorch_state_dict
from .idefics import from_idefics, to_idefics_state_dict
from .idefics2 import from_idefics2, to_idefics2_state_dict
from .open_flamingo import from_open_flamingo, to_open_flamingo_state_dict

register_converter(Converter("idefics", from_idefics, to_idefics_state_dict))
register_converter(Converter("idefics2", from_idefics2, to_idefics2_state_dict))
register_converter(Converter("flamingo_pytorch", from_flamingo_pytorch, to_flamingo_pytorch_state_dict))
register_converter(Converter("open_flamingo", from_open_flamingo, to_open_flamingo_state_dict))

__all__ = [
    "from_flamingo_pytorch",
    "from_idefics",
    "from_idefics2",
    "from_open_flamingo",
    "load_checkpoint",
    "load_idefics_checkpoint",
    "load_state_dict_strict",
    "to_flamingo_pytorch_state_dict",
    "to_idefics2_state_dict",
    "to_idefics_state_dict",
    "to_open_flamingo_state_dict",
]
