"""A resampler trained on real images in under a minute: scikit-learn's 8 x 8 handwritten digits.

Random weights make random attention maps; this file trains a small model so there is something
to look at. Each of the 64 pixels of a digit becomes one context token (its brightness times a
learned vector, plus a learned position embedding, so the resampler knows *where* a pixel is), a
`PerceiverResampler` compresses the 64 tokens to a few latents, and a linear classifier reads the
digit's class off those latents:

    images [b, 8, 8] -> PixelEmbedding -> context [b, s, e]   (s = 64 pixels)
                     -> PerceiverResampler -> latents [b, l, e]
                     -> 'b l e -> b (l e)' -> Linear -> logits [b, 10]

The digits ship with scikit-learn (1,797 images, no download). The split, the initial weights and
the batch order are seeded, and on the CPU the loop runs deterministically, so a run gives the
same curves every time. The same code trains on a GPU when given `device="cuda"`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from .config import ResamplerConfig
from .device import available_devices
from .modules import PerceiverResampler
from .trace import Trace, attention_entropy

SIDE = 8  # the digits are 8 x 8 pixels
N_CLASSES = 10
MAX_PIXEL = 16.0  # load_digits stores brightness as integers 0..16


# -- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class DigitsSplit:
    """The digits, cut once into a training set and a held-out test set.

    train_images [N, 8, 8] floats in [0, 1] (0 = blank), train_labels [N] ints 0..9; the same for test.
    """

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor

    def __repr__(self) -> str:
        return (
            f"DigitsSplit(train: {len(self.train_labels)} images, test: {len(self.test_labels)} images, 8 x 8 pixels)"
        )


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> DigitsSplit:
    """scikit-learn's 1,797 digits, shuffled with a fixed seed and split into train / held-out test.

    The shuffle uses numpy's RandomState because numpy promises it draws the same numbers in every
    version: the split is the same on every machine.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(
            f"test_fraction must be a number between 0 and 1 (e.g. 0.2 holds out 20%); got {test_fraction!r}"
        )
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images / MAX_PIXEL, dtype=torch.float32)  # [1797, 8, 8]
    labels = torch.tensor(digits.target, dtype=torch.long)  # [1797]
    order = torch.from_numpy(np.random.RandomState(seed).permutation(len(labels)))
    n_test = round(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return DigitsSplit(images[train], labels[train], images[test], labels[test])


# -- the model ----------------------------------------------------------------------------------


class PixelEmbedding(nn.Module):
    """images [b, 8, 8] -> context [b, s, e], s = 64: one token per pixel, brightness + position.

    Without a position embedding the resampler could not tell pixels apart: attention is
    permutation-invariant over context tokens (DESIGN.md), so it would see a bag of brightnesses.
    The position is learned as a row vector plus a column vector (16 vectors, not 64): pixels in the
    same row or column start out related, a hint that ~1,400 training images are too few to teach.
    (One free vector per pixel reached 95.5-97% held out in our runs, row + column 96-98%.)
    """

    def __init__(self, embed_dim: int, side: int = SIDE) -> None:
        super().__init__()
        self.side = side
        self.brightness = nn.Linear(1, embed_dim)  # brightness * w + b
        self.row = nn.Parameter(torch.randn(side, embed_dim))  # [y, e]
        self.column = nn.Parameter(torch.randn(side, embed_dim))  # [x, e]

    def position(self) -> Tensor:
        """[s, e]: the position embedding of each pixel, row by row (pixel y * 8 + x)."""
        grid = self.row[:, None, :] + self.column[None, :, :]  # [y, x, e]
        return rearrange(grid, "y x e -> (y x) e")

    def forward(self, images: Tensor) -> Tensor:
        pixels = rearrange(images, "b y x -> b (y x) 1")  # [b, s, 1], row by row
        return self.brightness(pixels) + self.position()  # [b, s, e]


class DigitClassifier(nn.Module):
    """images [b, 8, 8] -> logits [b, 10]: pixels as context, a resampler, a linear head on the latents.

    The head reads the latents side by side ('b l e -> b (l e)') rather than averaged, so each
    latent keeps its own identity and can specialise in a part of the digit.
    """

    def __init__(self, config: ResamplerConfig | None = None, n_classes: int = N_CLASSES, side: int = SIDE) -> None:
        super().__init__()
        if config is None:
            config = default_config()
        elif not isinstance(config, ResamplerConfig):
            raise TypeError(
                f"config must be a ResamplerConfig (e.g. toy.default_config()); got {type(config).__name__}"
            )
        self.config = config
        self.side = side
        self.embed = PixelEmbedding(config.embed_dim, side)
        self.resampler = PerceiverResampler(config)
        self.head = nn.Linear(config.n_latents * config.embed_dim, n_classes)

    def forward(self, images: Tensor, return_trace: bool = False) -> Tensor | tuple[Tensor, Trace]:
        """[b, 8, 8] -> logits [b, 10]; with return_trace=True also the resampler's Trace (s = 64)."""
        check_images(images, self.side, self.head.weight)
        context = self.embed(images)  # [b, s, e]
        if return_trace:
            latents, trace = self.resampler(context, return_trace=True)  # [b, l, e]
        else:
            latents, trace = self.resampler(context), None
        logits = self.head(rearrange(latents, "b l e -> b (l e)"))  # [b, 10]
        return (logits, trace) if return_trace else logits


def default_config(**overrides: Any) -> ResamplerConfig:
    """The resampler of chapter 4: 64 pixels -> 8 latents of width 32, 2 layers of 4 heads of 8."""
    return ResamplerConfig(**{**dict(embed_dim=32, depth=2, n_heads=4, head_dim=8, n_latents=8), **overrides})


def check_images(images: Any, side: int, like: Tensor) -> None:
    """Refuse images the classifier cannot read, saying what it expects."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape [b, {side}, {side}]; got {type(images).__name__}")
    if images.dim() != 3 or tuple(images.shape[1:]) != (side, side):
        hint = " For a single image add a batch axis: images[None]." if tuple(images.shape) == (side, side) else ""
        raise ValueError(f"images must have shape [b, {side}, {side}]; got {tuple(images.shape)}.{hint}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floats in [0, 1]; got dtype {images.dtype}. Divide by 16: images / 16")
    if images.device != like.device:
        raise ValueError(
            f"images are on {images.device} but the model is on {like.device}; use images.to('{like.device}')"
        )


# -- training -----------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What `train_digits` returns.

    model          the trained DigitClassifier, in eval mode, on the device it was trained on
    history        one entry per evaluation: step, loss (mean training loss since the last one),
                   test_accuracy (% of the held-out images classified right)
    seconds        wall-clock time of the training loop, evaluations included
    device         where it ran
    initial_state  the weights before the first step (see `initial_model`)
    """

    model: DigitClassifier
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"
    initial_state: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def accuracy(self) -> float:
        """Held-out accuracy in % at the end of training."""
        return self.history["test_accuracy"][-1]

    def initial_model(self) -> DigitClassifier:
        """The same architecture with the weights it had before training: what random weights look at."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.initial_state)
        return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 512) -> float:
    """% of `images` whose largest logit is the right label (computed on the model's device)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start : start + batch_size].to(device))
        correct += int((logits.argmax(-1) == labels[start : start + batch_size].to(device)).sum())
    model.train(was_training)
    return 100.0 * correct / max(len(labels), 1)


def train_digits(
    config: ResamplerConfig | None = None,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.5,
    seed: int = 0,
    device: str | torch.device | None = None,
    data: DigitsSplit | None = None,
    eval_every: int = 100,
    progress: bool = True,
    threads: int | None = 1,
) -> TrainResult:
    """Train a DigitClassifier with AdamW and a cosine learning rate; returns the model and its curves.

    Seeded: the same seed gives the same initial weights and the same batches. On the CPU the loop
    also runs with torch.use_deterministic_algorithms, and with `threads` CPU threads (1 by default:
    the float rounding then does not depend on the machine's core count, and see below for speed;
    None keeps torch's setting). `device` defaults to "cpu" so the notebook gives the same numbers everywhere; pass
    pe.pick_device() for a GPU. `progress` shows a tqdm bar (a widget in Jupyter); tests pass False.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    device = torch.device("cpu" if device is None else device)
    if device.type not in available_devices():
        raise ValueError(f"device {str(device)!r} is not available on this machine; available: {available_devices()}")
    data = load_digits_split() if data is None else data
    if batch_size > len(data.train_labels):
        raise ValueError(f"batch_size {batch_size} is larger than the {len(data.train_labels)} training images")
    torch.manual_seed(seed)
    model = DigitClassifier(config)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = model.to(device)
    train_x, train_y = data.train_images.to(device), data.train_labels.to(device)
    optimizer, schedule = adamw_with_cosine(model, lr, weight_decay, steps)
    batches = torch.Generator().manual_seed(seed)  # a CPU generator: the batch order is the same on any device
    history: dict[str, list[float]] = {"step": [], "loss": [], "test_accuracy": []}

    saved = deterministic_begin(threads if device.type == "cpu" else None)
    bar = _progress_bar(steps, progress)
    start, running, count = time.perf_counter(), 0.0, 0
    try:
        model.train()
        order, cursor = torch.randperm(len(train_y), generator=batches), 0
        for step in range(1, steps + 1):
            if cursor + batch_size > len(order):  # the epoch is used up: reshuffle
                order, cursor = torch.randperm(len(train_y), generator=batches), 0
            index = order[cursor : cursor + batch_size].to(device)
            cursor += batch_size
            loss = nn.functional.cross_entropy(model(train_x[index]), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running, count = running + loss.item(), count + 1
            if step % eval_every == 0 or step == steps:
                history["step"].append(step)
                history["loss"].append(running / count)
                history["test_accuracy"].append(accuracy(model, data.test_images, data.test_labels))
                running, count = 0.0, 0
                if bar is not None:
                    bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", test_acc=f"{history['test_accuracy'][-1]:.1f}%")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        deterministic_end(saved)
    model.eval()
    return TrainResult(model, history, time.perf_counter() - start, str(device), initial_state)


def deterministic_begin(threads: int | None) -> tuple[bool, bool, int]:
    """Switch on torch's deterministic algorithms and use `threads` CPU threads; returns what to restore."""
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    saved_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads is not None:
        # on tensors this small a second thread saves little (about 20% with both cores free, see
        # benchmarks/digits_training.py) and costs a lot when another process holds that core:
        # every op then waits for it, up to 100x slower per step in our runs on a shared machine
        torch.set_num_threads(threads)
    return (*saved, saved_threads)


def deterministic_end(saved: tuple[bool, bool, int]) -> None:
    """Put back what `deterministic_begin` changed."""
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.set_num_threads(saved[2])


def adamw_with_cosine(model: nn.Module, lr: float, weight_decay: float, steps: int):
    """(optimizer, schedule): AdamW with weight decay on the matrices only, a warm-up, then a cosine to 0."""
    # weight decay pulls matrices (projections, latents, position vectors) towards 0; the LayerNorm
    # gains and the biases are left alone, or QK-norm's gains could never grow to sharpen attention
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
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


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm  # a widget in Jupyter, a text bar in a terminal

    return tqdm(total=total, desc="training", unit="step")


# -- what the latents look at -------------------------------------------------------------------


def image_attention(trace: Trace) -> Tensor:
    """[depth, b, h, l, s]: each latent's attention over the image pixels only, renormalised to sum to 1.

    The latents also attend to themselves (the keys after the context); dropping those keys and
    renormalising asks "of what it takes from the image, where does this latent look?".
    """
    pixels = trace.stacked()[..., : trace.context_length]  # [depth, b, h, l, s]
    return pixels / pixels.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(pixels.dtype).tiny)


def image_entropy(trace: Trace) -> Tensor:
    """[depth, b, h, l]: entropy (nats) of `image_attention`; log(s) = log(64) = 4.16 is a flat look at every pixel."""
    return attention_entropy(image_attention(trace))


def latent_overlap(maps: Tensor) -> Tensor:
    """[..., l, s] -> [...]: how much two latents look at the same pixels, averaged over all pairs of latents.

    For two maps p and q (each summing to 1) the overlap is sum_j min(p_j, q_j): 1 when they are the
    same map, 0 when they look at disjoint pixels.
    """
    l = maps.shape[-2]
    if l < 2:
        raise ValueError(f"latent_overlap needs at least 2 latents to compare; got maps of shape {tuple(maps.shape)}")
    pairs = torch.minimum(maps[..., :, None, :], maps[..., None, :, :]).sum(-1)  # [..., l, l]
    off_diagonal = ~torch.eye(l, dtype=torch.bool, device=maps.device)
    return pairs[..., off_diagonal].mean(-1)
