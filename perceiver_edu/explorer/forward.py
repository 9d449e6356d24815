"""The forward pass the explorer runs: build the model, run it once, keep the trace on the CPU.

No ipywidgets and no matplotlib here: `benchmarks/gpu_check.py` and tests import this module to
run exactly what the explorer runs on every architecture change.
Letters: b batch, s context length, l latents, h heads, d head dim, e embed dim, n keys (s + l).
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, replace
from typing import Iterator

import torch
from torch import Tensor

from ..config import ResamplerConfig
from ..inputs import make_context
from ..modules import PerceiverResampler
from ..trace import Trace

EMBED_DIM = 64  # e: fixed in the explorer; what changes the attention is h, d, l, s and depth
MEMORY_BUDGET_MB = 200  # a setting whose trace and activations need more is refused with a message


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
    n_params: int


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


def run_forward(config: ResamplerConfig, *, input_kind: str = "image", context_length: int = 257, seed: int = 0,
                device: str = "cpu") -> Run:
    """Build the resampler with seeded weights, run it once on a seeded context, keep the trace.

    The weights are drawn on the CPU from `seed` whatever the device, so the same settings give the
    same model on a GPU and on the CPU and their results can be compared.
    Raises ValueError for a context the settings cannot make (an image needs s = g*g + 1).
    """
    # The context is drawn from seed + 1: make_context(seed=k) and torch.manual_seed(k) start the same
    # random stream, so with one seed the first l random context tokens would be the latents themselves.
    context = _context(input_kind, context_length, config.embed_dim, seed + 1)  # [1, s, e]
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the learner's RNG
        torch.manual_seed(seed)
        model = PerceiverResampler(config)
    output, trace, seconds = traced(model, context, device)
    n_params = sum(p.numel() for p in model.parameters())
    return Run(config, input_kind, context_length, seed, str(device), output, trace, seconds, n_params)
