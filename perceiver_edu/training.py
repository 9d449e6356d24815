"""One training loop for every trained task: digits, scenes, the tiny Flamingo.

A task module (digits.py, scenes.py, flamingo.py) knows its data, its model and its metrics; this
file knows how to train: the optimiser and its schedule, the loop, determinism (threads and
deterministic kernels), the progress bar and what a run returns. A task calls it like this:

    torch.manual_seed(seed)                         # the task seeds its model and its data
    model = TaskModel(config)
    optimizer, schedule = adamw_with_cosine(model, lr, weight_decay, steps)
    result = train(model, step_loss, steps=steps, optimizer=optimizer, schedule=schedule,
                   evaluate=metrics, eval_every=100)

where `step_loss(step)` draws the step's batch and returns the loss, and `metrics(model)` returns a
dict of held-out figures. Every step runs zero_grad -> backward -> optimiser step -> schedule step.

Seeded runs are deterministic on one machine: the same seed gives the same weights, bit for bit. Across
machines they are not: CPUs with other vector units (AVX2, AVX-512, NEON) sum floats in other
orders, so the last bits differ from the first step and grow with training. That is why a run keeps
the loss of each of its first steps (`first_losses`): two machines agree on those to float32 rounding,
and a remake is checked against them and against the held-out figures (tests/test_pretrained.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from . import checks

FIRST_STEPS = 20  # how many per-step losses a run keeps for comparing remakes across machines


@dataclass
class TrainResult:
    """What `train` returns.

    model          the trained model, in eval mode, on the device it was trained on
    history        one entry per evaluation: "step", "loss" (mean training loss since the last
                   evaluation) and one column per figure the task's `evaluate` returns
    first_losses   the loss of each of the first steps, unaveraged (see FIRST_STEPS)
    seconds        wall-clock time of the loop, evaluations included
    device         where it ran
    initial_state  the weights before the first step (see `initial_model`)
    """

    model: nn.Module
    history: dict[str, list[float]] = field(default_factory=dict)
    first_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    initial_state: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def accuracy(self) -> float:
        """The last held-out accuracy in % (the column "test_accuracy" of the history)."""
        return self.history["test_accuracy"][-1]

    def initial_model(self) -> nn.Module:
        """The same architecture with the weights it had before training: what random weights look at."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.initial_state)
        return model.eval()


@contextlib.contextmanager
def deterministic(threads: int | None = 1) -> Iterator[None]:
    """Deterministic kernels and `threads` CPU threads inside the block; what was set before comes back after.

    One thread by default: the float rounding then does not depend on the machine's core count, and
    on tensors this small a second thread saves little (about 20 % with both cores free, see
    benchmarks/digits_training.py) but costs a lot when another process holds that core (every op
    waits for it: up to 100x slower per step in our runs on a shared machine). None keeps torch's setting.
    """
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    saved_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.set_num_threads(saved_threads)


def adamw_with_cosine(model: nn.Module, lr: float, weight_decay: float, steps: int):
    """(optimizer, schedule): AdamW over the trainable weights, decay on matrices only, a warm-up, then a cosine to 0."""
    # weight decay pulls matrices (projections, latents, position vectors) towards 0; the LayerNorm
    # gains and the biases are left alone, or QK-norm's gains could never grow to sharpen attention
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    # warm up over the first 5% of the steps, then a cosine down to 0: no wild first steps, and
    # the last steps fine-tune at a small rate.
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(t / steps, 1.0)))
    )
    return optimizer, schedule


def progress_bar(total: int, enabled: bool, description: str = "training"):
    """A tqdm bar (a widget in Jupyter, text in a terminal), or None when `enabled` is False."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="step")


def train(
    model: nn.Module,
    step_loss: Callable[[int], Tensor],
    *,
    steps: int,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_every: int = 100,
    threads: int | None = 1,
    progress: bool = True,
    device: str = "cpu",
    log_first: int = FIRST_STEPS,
    stop_after: int | None = None,
) -> TrainResult:
    """Run `steps` optimiser steps of `step_loss(step)` (step = 1, 2, ...) on `model`; return a TrainResult.

    `evaluate(model)` runs after every `eval_every` steps and after the last one; the loop puts the
    model in eval mode for it and back in train mode after. `threads`: see `deterministic` (pass None
    off the CPU). The model's weights as they are when `train` is called are kept as `initial_state`.
    `stop_after` ends the run early while the schedule still spans `steps`: the first steps of a recipe
    exactly as the full run takes them (how a remake's `first_losses` are checked).
    """
    checks.positive_int("steps", steps)
    checks.positive_int("eval_every", eval_every)
    if stop_after is not None:
        checks.positive_int("stop_after", stop_after)
    last = steps if stop_after is None else min(steps, stop_after)
    initial_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    history: dict[str, list[float]] = {"step": [], "loss": []}
    first_losses: list[float] = []
    bar = progress_bar(steps, progress)
    start, running, count = time.perf_counter(), 0.0, 0
    try:
        with deterministic(threads):
            model.train()
            for step in range(1, last + 1):
                loss = step_loss(step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                value = loss.item()
                if step <= log_first:
                    first_losses.append(value)
                running, count = running + value, count + 1
                if step % eval_every == 0 or step == last:
                    history["step"].append(step)
                    history["loss"].append(running / count)
                    running, count = 0.0, 0
                    if evaluate is not None:
                        model.eval()
                        for key, figure in evaluate(model).items():
                            history.setdefault(key, []).append(figure)
                        model.train()
                    if bar is not None:
                        bar.set_postfix({k: f"{v[-1]:.3g}" for k, v in history.items() if k != "step"})
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    return TrainResult(model, history, first_losses, time.perf_counter() - start, str(device), initial_state)
