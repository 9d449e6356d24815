"""Trained weights that ship with the package: `pe.pretrained("scenes")` and friends.

Each name has two files in perceiver_edu/weights/: NAME.safetensors (the weights; safetensors holds
tensors only, so loading one can never run code, unlike a pickled .pt) and NAME.json (the
architecture, the seed, the steps, how long training took and the held-out figures it reached).
`python -m perceiver_edu.train NAME` remakes a file from its recipe below.

    "digits"                chapter 4's 8 x 8 digit classifier (digits.train_digits, seed 1)
    "scenes"                the scenes model (scenes.train_scenes): QK-norm off, latents in the keys/values
    "scenes-qknorm"         the same task with QK-norm on
    "scenes-nojoin"         latents not in the keys/values (plain cross-attention)
    "scenes-qknorm-nojoin"  both switches changed
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from .config import ResamplerConfig

WEIGHTS = Path(__file__).resolve().parent / "weights"
PRETRAINED = ("digits", "scenes", "scenes-qknorm", "scenes-nojoin", "scenes-qknorm-nojoin")

# How each name is trained (read by train.py): the task, the resampler switches, the seed and the steps.
RECIPES: dict[str, dict[str, Any]] = {
    "digits": dict(task="digits", config={}, seed=1, steps=1000),
    "scenes": dict(task="scenes", config=dict(qk_norm=False, latents_in_kv=True), seed=0, steps=3000),
    "scenes-qknorm": dict(task="scenes", config=dict(qk_norm=True, latents_in_kv=True), seed=0, steps=3000),
    "scenes-nojoin": dict(task="scenes", config=dict(qk_norm=False, latents_in_kv=False), seed=0, steps=3000),
    "scenes-qknorm-nojoin": dict(task="scenes", config=dict(qk_norm=True, latents_in_kv=False), seed=0, steps=3000),
}

__all__ = ["PRETRAINED", "pretrained", "pretrained_info", "scenes_variant"]  # and held_out_scenes, below


def __getattr__(name: str) -> Any:
    # the tasks (scipy) and safetensors load when a model is built, so `import perceiver_edu` stays light;
    # held_out_scenes lives in scenes.py and is named here because it goes with the trained scenes models
    if name == "held_out_scenes":
        from .scenes import held_out_scenes

        return held_out_scenes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def scenes_variant(qk_norm: bool, latents_in_kv: bool) -> str:
    """The name of the trained scenes model with these two switches, e.g. (False, True) -> "scenes"."""
    for name, value in (("qk_norm", qk_norm), ("latents_in_kv", latents_in_kv)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False; got {value!r}")
    return "scenes" + ("-qknorm" if qk_norm else "") + ("" if latents_in_kv else "-nojoin")


def check_name(name: Any) -> str:
    """Refuse a name with no trained weights, listing the names that have them."""
    if name not in PRETRAINED:
        raise ValueError(f"no trained model is called {name!r}; the names are {', '.join(repr(n) for n in PRETRAINED)}")
    return name


def pretrained_info(name: str) -> dict[str, Any]:
    """What NAME.json says: the architecture, seed, steps, training time and held-out figures."""
    path = WEIGHTS / f"{check_name(name)}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"the description of {name!r} is missing: {path.name} is not in the package's weights folder. "
            f"Reinstall perceiver-edu, or remake it with: python -m perceiver_edu.train {name}"
        )
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path.name} is corrupt ({error}); remake it with: python -m perceiver_edu.train {name}"
        ) from None


def build(info: dict[str, Any]) -> nn.Module:
    """The untrained model that a NAME.json describes."""
    config = ResamplerConfig(**info["config"])
    if info["task"] == "digits":
        from .digits import DigitClassifier

        return DigitClassifier(config)
    from .scenes import SceneModel

    return SceneModel(config, **info["model"])


def pretrained(name: str) -> nn.Module:
    """The trained model called `name` (one of PRETRAINED), in eval mode on the CPU.

    "digits" reads [b, 8, 8] images (a DigitClassifier); the "scenes..." models read [b, H, W]
    canvases (a SceneModel; see held_out_scenes for scenes they never trained on).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = pretrained_info(name)
    path = WEIGHTS / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"the weights of {name!r} are missing: {path.name} is not in the package's weights folder. "
            f"Reinstall perceiver-edu, or remake them with: python -m perceiver_edu.train {name}"
        )
    try:
        model = build(info)
        state = load_file(path)
        model.load_state_dict(state)
    except (SafetensorError, OSError, RuntimeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"the weights file {path.name} of {name!r} is corrupt or does not match its {name}.json "
            f"({type(error).__name__}: {str(error)[:200]}); remake it with: python -m perceiver_edu.train {name}"
        ) from None
    return model.eval()
