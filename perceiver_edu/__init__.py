"""perceiver-edu: the Perceiver Resampler of Flamingo and IDEFICS, step by step.

import perceiver_edu as pe
model = pe.PerceiverResampler(pe.ResamplerConfig.tiny())
latents, trace = model(context, return_trace=True)   # [b, s, e] -> [b, l, e]

Start reading at `steps.py` (one function per step), then `modules.py` (the steps in order, with
weights); docs/design.md maps the rest. `import perceiver_edu` loads only torch, numpy and einops:
the trained tasks (scipy), the shipped weights (safetensors) and the explorer (matplotlib,
ipywidgets) load when a name of theirs is first used.
"""

from importlib import import_module

from . import checks, cost, interop, measure, steps
from .config import ResamplerConfig
from .device import available_devices, pick_device
from .fast import FastResampler
from .inputs import INPUT_KINDS, make_context
from .interop import load_checkpoint
from .modules import FeedForward, PerceiverAttention, PerceiverResampler, scale_qk_
from .pretrained import PRETRAINED, pretrained, pretrained_info, scenes_variant
from .trace import Trace, attention_entropy, context_share, image_attention, image_entropy, latent_overlap

# name -> (submodule, attribute; None = the submodule itself), loaded on first use by __getattr__.
# (A lazy name must not be a function named like its own module, as `pretrained` is: importing the
# submodule would bind the module to that name first. So `pretrained` is imported above; it is light.)
_LAZY = {
    "scenes": ("scenes", None),
    "digits": ("digits", None),
    "training": ("training", None),
    "flamingo": ("flamingo", None),
    "viz": ("viz", None),
    "explorer": ("explorer", None),
    "Explorer": ("explorer", "Explorer"),
    "AttentionView": ("explorer.view", "AttentionView"),  # the client-side view (explorer/view.py, view.js)
    "held_out_scenes": ("scenes", "held_out_scenes"),
    "SceneModel": ("scenes", "SceneModel"),
    "Scenes": ("scenes", "Scenes"),
    "make_scenes": ("scenes", "make_scenes"),
    "train_scenes": ("scenes", "train_scenes"),
    "DigitClassifier": ("digits", "DigitClassifier"),
    "load_digits_split": ("digits", "load_digits_split"),
    "train_digits": ("digits", "train_digits"),
}


def __getattr__(name):
    # called only for names not yet in the module: import the submodule, remember the value
    if name not in _LAZY:
        raise AttributeError(f"module 'perceiver_edu' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = import_module(f".{module_name}", __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


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
    "checks",
    "context_share",
    "cost",
    "flamingo",
    "held_out_scenes",
    "image_attention",
    "image_entropy",
    "interop",
    "latent_overlap",
    "load_digits_split",
    "load_checkpoint",
    "make_context",
    "make_scenes",
    "measure",
    "pick_device",
    "pretrained",
    "pretrained_info",
    "scale_qk_",
    "scenes",
    "scenes_variant",
    "steps",
    "digits",
    "train_digits",
    "train_scenes",
    "training",
]
__version__ = "0.1.0"
