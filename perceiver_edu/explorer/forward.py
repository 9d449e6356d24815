"""The forward pass the explorer runs: build the model, run it once, keep the trace on the CPU.

No ipywidgets and no matplotlib here: `benchmarks/gpu_check.py` and tests import this module to
run exactly what the explorer runs on every architecture change.
Letters: b batch, s context length, l latents, h heads, d head dim, e embed dim, n keys (s + l).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..config import ResamplerConfig
from ..inputs import INPUT_KINDS, make_context
from ..modules import PerceiverResampler
from ..trace import Trace

EMBED_DIM = 64  # e: fixed in the explorer; what changes the attention is h, d, l, s and depth
MEMORY_BUDGET_MB = 200  # a setting whose trace and activations need more is refused with a message
RANDOM = "random"  # the weights control's value for seeded random weights
SCENE = "scene"  # the input of the trained scenes models: a held-out canvas of handwritten digits
INPUTS = (*INPUT_KINDS, SCENE)  # what the explorer's input control offers
N_SCENES = 100  # the held-out scenes the explorer steps through: pe.held_out_scenes(N_SCENES)[i]


class Refused(ValueError):
    """A setting the explorer will not run (e.g. over the memory budget); the message says why."""


@dataclass(frozen=True)
class Run:
    """One forward pass of the explorer: what was run, what came out, and how long it took."""

    config: ResamplerConfig
    input_kind: str
    context_length: int
    seed: int
    device: str
    output: Tensor  # [b, l, e], on the CPU
    trace: Trace  # everything on the CPU, ready to plot
    seconds: float  # the forward pass alone (synchronised on a GPU)
    n_params: int  # the resampler's parameters
    weights: str = RANDOM  # "random" (seeded by `seed`) or the name of a trained model (pe.PRETRAINED)
    scene: Any = None  # with input "scene": the held-out scene (a Scenes of one: .images [1, H, W], .boxes, .labels)
    scene_index: int | None = None  # which of pe.held_out_scenes(N_SCENES) it is


def estimate_bytes(config: ResamplerConfig, context_length: int, batch: int = 1) -> int:
    """Roughly how many bytes a traced forward pass and the explorer's summaries of it need (float32).

    The attention maps dominate: depth x [b, h, l, n] for the weights and again for the scores,
    kept in the Trace, plus a stacked copy of each for the context-share and entropy views.
    """
    c, s = config, context_length
    n = s + c.n_latents if c.latents_in_kv else s
    maps = c.depth * batch * c.n_heads * c.n_latents * n
    # per layer: kv_input [b, n, e], q/k/v [b, n, (h d)], softmax temporaries [b, h, l, n]
    per_layer = batch * (n * c.embed_dim + 3 * n * c.inner_dim + 3 * c.n_heads * c.n_latents * n)
    params = c.depth * (4 * c.embed_dim * c.inner_dim + 2 * c.embed_dim * c.mlp_dim) + c.n_latents * c.embed_dim
    return 4 * (4 * maps + per_layer + params)


def check_budget(config: ResamplerConfig, context_length: int, budget_bytes: int) -> None:
    """Refuse, with a message that says what to shrink, a setting over the memory budget."""
    need = estimate_bytes(config, context_length)
    if need > budget_bytes:
        raise Refused(
            f"this setting needs about {need / 2**20:.0f} MB for its attention maps and activations, "
            f"over the explorer's budget of {budget_bytes / 2**20:.0f} MB "
            f"(Explorer(memory_budget_mb=...)); make depth, heads, latents or the context smaller"
        )


@functools.lru_cache(maxsize=8)
def _context(kind: str, context_length: int, embed_dim: int, seed: int) -> Tensor:
    """make_context, remembered: an image context resizes a photo, too slow to redo on every click.

    The cached tensor is shared, so nobody may write into it; the model only reads its context.
    """
    return make_context(kind, batch=1, context_length=context_length, embed_dim=embed_dim, seed=seed)


@contextlib.contextmanager
def _few_threads(config: ResamplerConfig, context_length: int, device: str) -> Iterator[None]:
    """Run a small CPU forward pass on one thread.

    Splitting a few-kFLOP matmul across threads gains nothing, and on a busy machine (a laptop
    running a browser, a CI box) waiting for the other threads stalls a 1 ms forward pass for
    100 ms and more. Big settings keep all threads.
    """
    small = estimate_bytes(config, context_length) < 32 * 2**20
    if device != "cpu" or not small:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def traced(model: torch.nn.Module, context: Tensor, device: str) -> tuple[Tensor, Trace, float]:
    """Run `model(context, return_trace=True)` on `device`, timed; output and trace come back on the CPU.

    context [b, s, e] -> output [b, l, e], the Trace, and the seconds of the forward pass alone
    (synchronised on a GPU, so the time is the device's work, not its queue).
    """
    model = model.to(device).eval()
    context = context.to(device)
    synchronize = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    config = model.config
    with torch.no_grad(), _few_threads(config, context.shape[1], str(device)):
        synchronize()
        start = time.perf_counter()
        output, trace = model(context, return_trace=True)
        synchronize()
        seconds = time.perf_counter() - start
    # plotting works on CPU numbers; moving the trace once here keeps every redraw off the device
    trace = replace(
        trace,
        attentions=tuple(a.cpu() for a in trace.attentions),
        scores=tuple(x.cpu() for x in trace.scores),
        latents=tuple(x.cpu() for x in trace.latents),
    )
    return output.cpu(), trace, seconds


# -- trained weights and their input: held-out scenes ------------------------------------------------


def weight_names() -> tuple[str, ...]:
    """What the weights control offers: "random", then every trained scenes model of pe.PRETRAINED.

    ("digits" is left out: it reads one 8 x 8 digit, not a scene.)
    """
    try:
        from ..pretrained import PRETRAINED
    except ImportError:  # a package built without its trained examples: random weights only
        return (RANDOM,)
    return (RANDOM, *(name for name in PRETRAINED if name.startswith("scenes")))


@functools.lru_cache(maxsize=8)
def trained_model(name: str) -> torch.nn.Module:
    """pe.pretrained(name), loaded once: switching back and forth between variants stays instant."""
    from ..pretrained import pretrained

    return pretrained(name)


ARCHITECTURE_FIELDS = ("embed_dim", "n_heads", "head_dim", "depth", "n_latents", "qk_norm", "latents_in_kv")


def differences(config: ResamplerConfig, trained: ResamplerConfig) -> list[str]:
    """The explorer's architecture fields where `config` is not the trained model's, as 'depth 3 (trained: 2)'."""
    return [
        f"{field} {getattr(config, field)} (trained: {getattr(trained, field)})"
        for field in ARCHITECTURE_FIELDS
        if getattr(config, field) != getattr(trained, field)
    ]


MIN_SCENE_SIDE = 7  # 7 x 7 patches of 4 pixels: a 28 x 28 canvas, the smallest that holds 4 digits of 8 x 8


def scene_side(context_length: int) -> int:
    """g for a scene context of g x g patches and no CLS token (64 -> 8); a clear error for other lengths."""
    side = math.isqrt(max(context_length, 0))
    if side * side != context_length or side < MIN_SCENE_SIDE:
        nearest = sorted({max(side, MIN_SCENE_SIDE) ** 2, max(side + 1, MIN_SCENE_SIDE) ** 2})
        raise ValueError(
            f"context_length must be a square number of patches (g*g, at least {MIN_SCENE_SIDE**2}; e.g. 64 = 8 x 8 "
            f"for the 32 x 32 scenes the models trained on, 100, 144) for scene input; got {context_length}. "
            f"The nearest valid lengths are {nearest}"
        )
    return side


@functools.lru_cache(maxsize=4)
def _held_out(canvas: int) -> Any:
    from ..pretrained import held_out_scenes

    return held_out_scenes(N_SCENES, canvas=canvas)


def held_out_scene(index: int, canvas: int) -> Any:
    """Held-out scene `index` (0..N_SCENES-1) on a square canvas of `canvas` pixels.

    The same scene as pe.held_out_scenes(N_SCENES, canvas=canvas)[index].
    """
    if not 0 <= index < N_SCENES:
        raise ValueError(f"scene must be between 0 and {N_SCENES - 1} (the explorer's held-out scenes); got {index}")
    return _held_out(canvas)[index]


def _scene_model(config: ResamplerConfig, seed: int, weights: str) -> torch.nn.Module:
    """The SceneModel to run: trained (and matching `config`), or untrained with weights drawn from `seed`."""
    if weights == RANDOM:
        from ..scenes import SceneModel

        with torch.random.fork_rng(devices=[]):  # seed the weights without touching the learner's RNG
            torch.manual_seed(seed)
            return SceneModel(config)
    model = trained_model(weights)
    differ = differences(config, model.resampler.config)
    if differ:
        raise ValueError(f"the trained model {weights!r} has another architecture: {', '.join(differ)}")
    return model


def run_forward(
    config: ResamplerConfig,
    *,
    input_kind: str = "image",
    context_length: int = 257,
    seed: int = 0,
    device: str = "cpu",
    weights: str = RANDOM,
    scene: int = 0,
) -> Run:
    """Build the resampler (seeded or trained weights), run it once on its context, keep the trace.

    Random weights are drawn on the CPU from `seed` whatever the device, so the same settings give
    the same model on a GPU and on the CPU and their results can be compared. With input "scene"
    the context is held-out scene number `scene`, cut into s = g*g patches by the scene model's own
    embedding (trained, or seeded like the rest); any other input is `make_context`'s, for random
    weights only. Raises ValueError for a context the settings cannot make (an image needs
    s = g*g + 1, a scene s = g*g) and for trained weights that do not fit the settings.
    """
    if input_kind == SCENE:
        model = _scene_model(config, seed, weights)
        the_scene = held_out_scene(scene, scene_side(context_length) * model.patch_size)
        with torch.no_grad(), _few_threads(config, context_length, "cpu"):  # a small conv: one thread is faster
            context = model.embed(the_scene.images)  # [1, s, e]
        output, trace, seconds = traced(model.resampler, context, device)
        n_params = sum(p.numel() for p in model.resampler.parameters())
        return Run(
            config,
            input_kind,
            context_length,
            seed,
            str(device),
            output,
            trace,
            seconds,
            n_params,
            weights,
            the_scene,
            scene,
        )
    if weights != RANDOM:
        raise ValueError(
            f"the trained model {weights!r} reads scenes: input_kind must be {SCENE!r} with "
            f"weights={weights!r}; got {input_kind!r}"
        )
    context = _context(input_kind, context_length, config.embed_dim, seed)  # [1, s, e]
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the learner's RNG
        torch.manual_seed(seed)
        model = PerceiverResampler(config)
    output, trace, seconds = traced(model, context, device)
    n_params = sum(p.numel() for p in model.parameters())
    return Run(config, input_kind, context_length, seed, str(device), output, trace, seconds, n_params)
