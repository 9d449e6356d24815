"""perceiver-edu: the Perceiver Resampler of Flamingo and IDEFICS, step by step.

import perceiver_edu as pe
model = pe.PerceiverResampler(pe.ResamplerConfig.tiny())
latents, trace = model(context, return_trace=True)   # [b, s, e] -> [b, l, e]
"""

from . import cost, scenes, steps, toy
from .config import ResamplerConfig
from .device import available_devices, pick_device
from .fast import FastResampler
from .inputs import INPUT_KINDS, make_context
from .interop import load_checkpoint, load_idefics_checkpoint
from .modules import FeedForward, PerceiverAttention, PerceiverResampler, scale_qk_
from .pretrained import PRETRAINED, held_out_scenes, pretrained, pretrained_info, scenes_variant
from .scenes import SceneModel, Scenes, make_scenes, train_scenes
from .toy import DigitClassifier, load_digits_split, train_digits
from .trace import Trace, attention_entropy, context_share


def __getattr__(name):
    # The explorer pulls in ipywidgets, matplotlib and PIL: load it when it is first used, so that
    # `import perceiver_edu` stays light for scripts and tests that only need the resampler.
    if name == "Explorer":
        from .explorer import Explorer

        return Explorer
    if name == "AttentionView":  # the client-side view (explorer/view.py, explorer/view.js)
        from .explorer.view import AttentionView

        return AttentionView
    raise AttributeError(f"module 'perceiver_edu' has no attribute {name!r}")


__all__ = [
    "AttentionView",
    "Explorer",
    "INPUT_KINDS",
    "PRETRAINED",
    "DigitClassifier",
    "FastResampler",
    "FeedForward",
    "PerceiverAttention",
    "PerceiverResampler",
    "SceneModel",
    "Scenes",
    "ResamplerConfig",
    "Trace",
    "attention_entropy",
    "available_devices",
    "context_share",
    "cost",
    "held_out_scenes",
    "load_digits_split",
    "load_checkpoint",
    "load_idefics_checkpoint",
    "make_context",
    "make_scenes",
    "pick_device",
    "pretrained",
    "pretrained_info",
    "scale_qk_",
    "scenes",
    "scenes_variant",
    "steps",
    "toy",
    "train_digits",
    "train_scenes",
]
__version__ = "0.1.0"
