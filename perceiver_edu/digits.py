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

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from . import checks
from .config import ResamplerConfig
from .device import available_devices
from .modules import PerceiverResampler
from .trace import Trace
from .training import TrainResult, adamw_with_cosine, train

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
    permutation-invariant over context tokens (docs/design.md), so it would see a bag of brightnesses.
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
            config = ResamplerConfig.tiny()
        elif not isinstance(config, ResamplerConfig):
            raise TypeError(
                f"config must be a ResamplerConfig (e.g. pe.ResamplerConfig.tiny()); got {type(config).__name__}"
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
    stop_after: int | None = None,
) -> TrainResult:
    """Train a DigitClassifier with AdamW and a cosine learning rate (training.train); returns the model and its curves.

    history: step, loss, test_accuracy (% of the held-out digits classified right). Seeded: the same
    seed gives the same initial weights and the same batches, and on the CPU the same weights bit for
    bit (on one machine; see training.py for across machines). `device` defaults to "cpu" so the
    notebook gives the same numbers everywhere; pass pe.pick_device() for a GPU. `threads`: CPU
    threads (see training.deterministic). `progress` shows a tqdm bar; tests pass False.
    `stop_after`: see training.train.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        checks.positive_int(name, value)
    device = torch.device("cpu" if device is None else device)
    if device.type not in available_devices():
        raise ValueError(f"device {str(device)!r} is not available on this machine; available: {available_devices()}")
    data = load_digits_split() if data is None else data
    if batch_size > len(data.train_labels):
        raise ValueError(f"batch_size {batch_size} is larger than the {len(data.train_labels)} training images")
    torch.manual_seed(seed)
    model = DigitClassifier(config).to(device)
    train_x, train_y = data.train_images.to(device), data.train_labels.to(device)
    batches = torch.Generator().manual_seed(seed)  # a CPU generator: the batch order is the same on any device
    epoch = {"order": torch.randperm(len(train_y), generator=batches), "cursor": 0}

    def step_loss(step: int) -> Tensor:
        if epoch["cursor"] + batch_size > len(epoch["order"]):  # the epoch is used up: reshuffle
            epoch["order"], epoch["cursor"] = torch.randperm(len(train_y), generator=batches), 0
        index = epoch["order"][epoch["cursor"] : epoch["cursor"] + batch_size].to(device)
        epoch["cursor"] += batch_size
        return nn.functional.cross_entropy(model(train_x[index]), train_y[index])

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"test_accuracy": accuracy(model, data.test_images, data.test_labels)}

    optimizer, schedule = adamw_with_cosine(model, lr, weight_decay, steps)
    return train(
        model,
        step_loss,
        steps=steps,
        optimizer=optimizer,
        schedule=schedule,
        evaluate=evaluate,
        eval_every=eval_every,
        threads=threads if device.type == "cpu" else None,
        progress=progress,
        device=str(device),
        stop_after=stop_after,
    )
