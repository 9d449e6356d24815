"""Scenes: several handwritten digits on one canvas, and a resampler whose latents each find one.

Chapter 4's digit classifier looks at one digit; here a canvas holds 2-4 of scikit-learn's real
8 x 8 digits at random, non-overlapping spots, and the task needs every one of them. Each latent
predicts one object, its class (or "no object") and its box, and the scene's objects are matched
to the latents with the Hungarian algorithm, as DETR matches its object queries:

    images [b, H, W] -> a small CNN, cut in p x p patches, + Fourier positions -> context [b, s, e]   (s = H W / p^2)
                     -> PerceiverResampler -> latents [b, l, e]
                     -> per latent: class logits [b, l, 11] and a box [b, l, 4]

Because a latent is asked for *one* object's class and box, it pays to look at that object only:
the latents become object-centric, and their attention maps can be scored against the boxes
(`object_attention`, `evaluate`'s object coverage). The positions are Fourier features of coordinates normalised to [-1, 1], as
in the Perceiver paper, so the same model reads a canvas of another size: s changes, the latents
stay. Scenes are drawn from a seed with no download; training scenes use the digits of
`digits.load_digits_split()`'s training half, held-out scenes (`held_out_scenes`) its test half.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from einops import rearrange
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from . import checks
from .config import ResamplerConfig
from .digits import N_CLASSES, SIDE, load_digits_split
from .modules import PerceiverResampler, scale_qk_
from .trace import Trace, attention_entropy, image_attention
from .training import TrainResult, adamw_with_cosine, train

CANVAS = 32  # pixels per side of a training scene
PATCH = 4  # pixels per side of one context token
NO_OBJECT = N_CLASSES  # class index 10: "this latent found nothing"
MIN_OBJECTS, MAX_OBJECTS = 2, 4


# -- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Scenes:
    """A batch of scenes and what is in them.

    images  [N, H, W] floats in [0, 1] (0 = blank)
    labels  per scene a LongTensor [k] of digit classes 0..9
    boxes   per scene a LongTensor [k, 4] of pixel boxes (y0, x0, y1, x1), end-exclusive
    """

    images: Tensor
    labels: list[Tensor]
    boxes: list[Tensor]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | slice) -> Scenes:
        """scenes[i:j] (or scenes[i], kept as a batch of one): a smaller batch of the same scenes."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Scenes(self.images[index], self.labels[index], self.boxes[index])

    def __repr__(self) -> str:
        h, w = self.images.shape[1:]
        counts = sorted({len(x) for x in self.labels})
        return f"Scenes({len(self)} scenes of {h} x {w} pixels, {counts[0]}-{counts[-1]} digits each)"


@lru_cache(maxsize=2)  # read once: the explorer steps through scenes one at a time
def _digit_pool(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The 8 x 8 digits scenes are made of: [N, 8, 8] floats and [N] classes of one half of the split."""
    data = load_digits_split()
    if split == "train":
        return data.train_images.numpy(), data.train_labels.numpy()
    if split == "test":
        return data.test_images.numpy(), data.test_labels.numpy()
    raise ValueError(f"split must be 'train' or 'test' (the held-out digits); got {split!r}")


def _place(rng: np.random.Generator, k: int, canvas: int) -> list[tuple[int, int]]:
    """k top-left corners of 8 x 8 boxes on a canvas x canvas square, no two boxes overlapping."""
    while True:  # a crowded draw is rare on 32 x 32 (4 boxes of 64 pixels in 1,024): start again
        corners: list[tuple[int, int]] = []
        for _ in range(50):
            y, x = (int(v) for v in rng.integers(0, canvas - SIDE + 1, size=2))
            if all(abs(y - y2) >= SIDE or abs(x - x2) >= SIDE for y2, x2 in corners):
                corners.append((y, x))
                if len(corners) == k:
                    return corners


def _draw(
    rng: np.random.Generator, n: int, canvas: int, objects: tuple[int, int], pool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n scenes as arrays: images [n, H, W], labels [n, k_max] (-1 = padding), boxes [n, k_max, 4]."""
    digits, classes = pool
    images = np.zeros((n, canvas, canvas), dtype=np.float32)
    labels = np.full((n, objects[1]), -1, dtype=np.int64)
    boxes = np.zeros((n, objects[1], 4), dtype=np.int64)
    for i in range(n):
        k = int(rng.integers(objects[0], objects[1] + 1))
        for j, (y, x) in enumerate(_place(rng, k, canvas)):
            pick = int(rng.integers(len(classes)))
            images[i, y : y + SIDE, x : x + SIDE] = digits[pick]
            labels[i, j] = classes[pick]
            boxes[i, j] = (y, x, y + SIDE, x + SIDE)
    return images, labels, boxes


def _check_scene_args(n: Any, canvas: Any, min_objects: Any, max_objects: Any) -> None:
    checks.positive_int("n", n, " (how many scenes)")
    if isinstance(canvas, bool) or not isinstance(canvas, int) or canvas < 2 * SIDE:
        raise ValueError(
            f"canvas must be an int of at least {2 * SIDE} pixels (room for two 8 x 8 digits); got {canvas!r}"
        )
    if not (isinstance(min_objects, int) and isinstance(max_objects, int) and 1 <= min_objects <= max_objects):
        raise ValueError(
            f"min_objects and max_objects must be ints with 1 <= min_objects <= max_objects; got {min_objects!r}, {max_objects!r}"
        )
    if max_objects * SIDE * SIDE * 3 > canvas * canvas:
        raise ValueError(
            f"{max_objects} digits of 8 x 8 do not fit comfortably on a {canvas} x {canvas} canvas; use a bigger canvas"
        )


def make_scenes(
    n: int,
    seed: int = 0,
    *,
    canvas: int = CANVAS,
    min_objects: int = MIN_OBJECTS,
    max_objects: int = MAX_OBJECTS,
    split: str = "train",
) -> Scenes:
    """n scenes of canvas x canvas pixels, each with min_objects..max_objects digits, drawn from `seed`.

    split="train" uses the training digits, split="test" the held-out ones (see `held_out_scenes`).
    The same arguments give the same scenes on every machine (numpy's seeded Generator).
    """
    _check_scene_args(n, canvas, min_objects, max_objects)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    images, labels, boxes = _draw(rng, n, canvas, (min_objects, max_objects), _digit_pool(split))
    keep = [row >= 0 for row in labels]
    return Scenes(
        torch.from_numpy(images),
        [torch.from_numpy(l[m]) for l, m in zip(labels, keep)],
        [torch.from_numpy(b[m]) for b, m in zip(boxes, keep)],
    )


def held_out_scenes(n: int = 500, seed: int = 0, **kwargs: Any) -> Scenes:
    """Scenes no trained model has seen: made of the held-out digits (`make_scenes(..., split="test")`)."""
    return make_scenes(n, seed, split="test", **kwargs)


# -- the model ----------------------------------------------------------------------------------


def fourier_positions(rows: int, columns: int, n_bands: int = 6, max_freq: float = 8.0) -> Tensor:
    """[s, 2 (1 + 2 n_bands)]: each patch's centre, normalised to [-1, 1], and its sines and cosines.

    As in the Perceiver: frequencies f from 1 to max_freq / 2, features sin(pi f y), cos(pi f y)
    and the same for x. Normalised coordinates make the features independent of the canvas size.
    """
    ys = (torch.arange(rows) + 0.5) / rows * 2 - 1  # [y]
    xs = (torch.arange(columns) + 0.5) / columns * 2 - 1  # [x]
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)  # [y, x, 2]
    grid = rearrange(grid, "y x c -> (y x) c")  # [s, 2]
    angles = math.pi * grid[..., None] * torch.linspace(1.0, max_freq / 2, n_bands)  # [s, 2, bands]
    features = torch.cat([grid[..., None], angles.sin(), angles.cos()], dim=-1)  # [s, 2, 1 + 2 bands]
    return rearrange(features, "s c f -> s (c f)")


BACKBONE_CHANNELS = 32


def backbone() -> nn.Sequential:
    """[b, 1, H, W] -> [b, 32, H/2, W/2]: a two-layer CNN, the scenes model's vision encoder in miniature.

    Flamingo and IDEFICS resample the features of a vision encoder, and DETR's object queries read
    a CNN's; a raw 4 x 4 patch of a digit says little about which digit it is. Each output cell sees
    a 7 x 7 pixel window, so the token of a 4 x 4 patch describes a 9 x 9 neighbourhood: the tokens
    near an object's centre describe the object, and a latent that attends there can name it.
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, BACKBONE_CHANNELS, 3, padding=1),
        nn.ReLU(),
    )


@dataclass(frozen=True)
class SetPrediction:
    """What a SceneModel says: logits [b, l, 11] (class 10 = no object), boxes [b, l, 4] in [0, 1] of the canvas."""

    logits: Tensor
    boxes: Tensor


class SceneModel(nn.Module):
    """images [b, H, W] -> SetPrediction: CNN features of patches as context, a resampler, a class and a box per latent.

    H and W must be multiples of patch_size; any such size works (Fourier positions), the latents
    and their number stay the same.
    """

    def __init__(
        self,
        config: ResamplerConfig | None = None,
        patch_size: int = PATCH,
        n_bands: int = 6,
        max_freq: float = 8.0,
        qk_init_gain: float = 2.0,
    ) -> None:
        super().__init__()
        if config is None:
            config = scenes_config()
        elif not isinstance(config, ResamplerConfig):
            raise TypeError(
                f"config must be a ResamplerConfig (e.g. scenes.scenes_config()); got {type(config).__name__}"
            )
        self.config = config
        self.patch_size, self.n_bands, self.max_freq, self.qk_init_gain = patch_size, n_bands, max_freq, qk_init_gain
        if patch_size % 2:
            raise ValueError(f"patch_size must be even (the backbone halves the canvas); got {patch_size}")
        e = config.embed_dim
        self.backbone = backbone()  # [b, 1, H, W] -> [b, c, H/2, W/2]
        self.pixels = nn.Linear(BACKBONE_CHANNELS * (patch_size // 2) ** 2, e)  # what is in (and around) the patch
        self.position = nn.Linear(2 * (1 + 2 * n_bands), e)  # where it is
        self.resampler = PerceiverResampler(config)
        # q and k start qk_init_gain times larger (scores gain**2): each latent starts with a slightly
        # sharper view of its own, so the latents differ from the first step and the Hungarian
        # matching finds a consistent latent for each object sooner (a flat start learned slower here)
        scale_qk_(self.resampler, qk_init_gain)
        self.class_head = nn.Linear(e, N_CLASSES + 1)
        self.box_head = nn.Linear(e, 4)

    def spec(self) -> dict[str, Any]:
        """The constructor arguments, as saved next to the weights."""
        return dict(
            config=self.config.to_dict(),
            patch_size=self.patch_size,
            n_bands=self.n_bands,
            max_freq=self.max_freq,
            qk_init_gain=self.qk_init_gain,
        )

    def embed(self, images: Tensor) -> Tensor:
        """[b, H, W] -> context [b, s, e]: one token per p x p patch, row by row: its CNN features + its Fourier position."""
        check_canvas(images, self.patch_size, self.pixels.weight)
        p = self.patch_size
        rows, columns = images.shape[1] // p, images.shape[2] // p
        positions = fourier_positions(rows, columns, self.n_bands, self.max_freq).to(images)  # [s, f]
        features = self.backbone(rearrange(images, "b y x -> b 1 y x"))  # [b, c, H/2, W/2]
        cells = rearrange(features, "b c (y p) (x q) -> b (y x) (c p q)", p=p // 2, q=p // 2)  # [b, s, c p q]
        return self.pixels(cells) + self.position(positions)  # [b, s, e]

    def forward(self, images: Tensor, return_trace: bool = False) -> SetPrediction | tuple[SetPrediction, Trace]:
        """[b, H, W] -> SetPrediction (logits [b, l, 11], boxes [b, l, 4]); with return_trace also the Trace."""
        context = self.embed(images)  # [b, s, e]
        if return_trace:
            latents, trace = self.resampler(context, return_trace=True)  # [b, l, e]
        else:
            latents, trace = self.resampler(context), None
        prediction = SetPrediction(self.class_head(latents), self.box_head(latents).sigmoid())
        return (prediction, trace) if return_trace else prediction


def scenes_config(**overrides: Any) -> ResamplerConfig:
    """The scenes resampler: e = 64, 2 layers of 4 heads of 16, 8 latents (for at most 4 objects)."""
    return ResamplerConfig(**{**dict(embed_dim=64, depth=2, n_heads=4, head_dim=16, n_latents=8), **overrides})


def init_scene_model(config: ResamplerConfig | None = None, seed: int = 0, **kwargs: Any) -> SceneModel:
    """A SceneModel with the initial weights `train_scenes(config, seed=seed)` starts from."""
    torch.manual_seed(seed)
    return SceneModel(config, **kwargs)


def check_canvas(images: Any, patch_size: int, like: Tensor) -> None:
    """Refuse images a SceneModel cannot cut into patches, saying what it expects."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape [b, H, W]; got {type(images).__name__}")
    if images.dim() != 3:
        hint = " For a single scene add a batch axis: images[None]." if images.dim() == 2 else ""
        raise ValueError(f"images must have shape [b, H, W]; got {tuple(images.shape)}.{hint}")
    if images.shape[1] % patch_size or images.shape[2] % patch_size:
        raise ValueError(
            f"images' height and width must be multiples of the patch size {patch_size}; got {tuple(images.shape[1:])}"
        )
    if not images.is_floating_point():
        raise TypeError(f"images must be floats in [0, 1]; got dtype {images.dtype}")
    if images.device != like.device:
        raise ValueError(
            f"images are on {images.device} but the model is on {like.device}; use images.to('{like.device}')"
        )


# -- matching and the loss ----------------------------------------------------------------------

BOX_WEIGHT = 5.0  # an L1 box error of 0.2 (a fifth of the canvas) costs as much as a class log-prob of -1


def match_cost(log_probs: Tensor, boxes: Tensor, labels: Tensor, true_boxes: Tensor) -> Tensor:
    """[l, c], [l, 4], [k], [k, 4] -> [l, k]: the cost of latent i predicting object j."""
    return -log_probs[:, labels] + BOX_WEIGHT * torch.cdist(boxes, true_boxes, p=1)


def hungarian_match(
    prediction: SetPrediction, labels: list[Tensor], boxes: list[Tensor], canvas: tuple[int, int]
) -> list[tuple[Tensor, Tensor]]:
    """Per scene (latent indices [k], object indices [k]): the assignment of objects to latents of least cost."""
    log_probs = prediction.logits.detach().log_softmax(-1)  # [b, l, c]
    scale = torch.tensor([canvas[0], canvas[1], canvas[0], canvas[1]], dtype=torch.float32)
    matches = []
    for i, (y, b) in enumerate(zip(labels, boxes)):
        cost = match_cost(log_probs[i], prediction.boxes[i].detach(), y, b.float() / scale)  # [l, k]
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        matches.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return matches


NO_OBJECT_WEIGHT = 0.2  # 8 latents, 2-4 objects: most latents say "no object"; weigh that down as DETR does


def set_loss(prediction: SetPrediction, labels: list[Tensor], boxes: list[Tensor], canvas: tuple[int, int]) -> Tensor:
    """Cross-entropy of every latent against its matched object (or "no object") + L1 of the matched boxes."""
    b, l, c = prediction.logits.shape
    matches = hungarian_match(prediction, labels, boxes, canvas)
    target = torch.full((b, l), NO_OBJECT, dtype=torch.long)
    true_boxes = torch.zeros(b, l, 4)
    scale = torch.tensor([canvas[0], canvas[1], canvas[0], canvas[1]], dtype=torch.float32)
    for i, (rows, cols) in enumerate(matches):
        target[i, rows] = labels[i][cols]
        true_boxes[i, rows] = boxes[i][cols].float() / scale
    weight = torch.ones(c)
    weight[NO_OBJECT] = NO_OBJECT_WEIGHT
    classes = nn.functional.cross_entropy(
        rearrange(prediction.logits, "b l c -> (b l) c"), target.flatten(), weight=weight
    )
    matched = target != NO_OBJECT  # [b, l]
    box_error = (prediction.boxes - true_boxes).abs().sum(-1)  # [b, l]
    return classes + BOX_WEIGHT * box_error[matched].mean()


# -- what the trained model gets right, and where its latents look ------------------------------


def object_overlap(boxes: Tensor, canvas: tuple[int, int], patch_size: int) -> Tensor:
    """[k, 4] pixel boxes -> [k, s] floats in [0, 1]: the fraction of each patch's pixels inside each box.

    A patch wholly inside a box counts 1, a patch half inside counts 0.5, a patch the box only
    grazes at a corner counts little. An 8 x 8 box covers 4 patches' worth of pixels however it sits.
    """
    rows, columns = canvas[0] // patch_size, canvas[1] // patch_size
    y = torch.arange(rows) * patch_size  # top pixel row of each patch row
    x = torch.arange(columns) * patch_size
    # overlap of [y, y + p) with [y0, y1) along each axis, in pixels, then as a fraction of the patch
    along_y = (torch.minimum(y[None] + patch_size, boxes[:, 2:3]) - torch.maximum(y[None], boxes[:, 0:1])).clamp(min=0)
    along_x = (torch.minimum(x[None] + patch_size, boxes[:, 3:4]) - torch.maximum(x[None], boxes[:, 1:2])).clamp(min=0)
    inside = along_y[:, :, None].float() * along_x[:, None, :].float() / patch_size**2  # [k, rows, columns]
    return rearrange(inside, "k y x -> k (y x)")


def object_masks(boxes: Tensor, canvas: tuple[int, int], patch_size: int) -> Tensor:
    """[k, 4] pixel boxes -> [k, s] bool: the patches each box touches (overlaps by at least one pixel), row by row."""
    return object_overlap(boxes, canvas, patch_size) > 0


def latent_maps(trace: Trace, layer: int = -1) -> Tensor:
    """[b, l, s]: each latent's attention over the context in one layer, mean over heads, renormalised to 1."""
    return image_attention(trace)[layer].mean(1)


def object_attention(
    maps: Tensor, boxes: list[Tensor], canvas: tuple[int, int], patch_size: int, weigh: str = "overlap"
) -> list[Tensor]:
    """Per scene [l, k]: the share of each latent's context attention (maps [b, l, s]) on each object.

    weigh="overlap" (the default) counts each patch's weight times the fraction of its pixels inside
    the object's box (`object_overlap`): attention on the object's own pixels. weigh="touch", the
    measure of earlier versions, counts the whole weight of every patch the box touches, even at a
    corner (`object_masks`): it says more than a reader sees on the map, and is kept to compare.
    """
    if weigh == "overlap":
        masks = [object_overlap(b, canvas, patch_size) for b in boxes]
    elif weigh == "touch":
        masks = [object_masks(b, canvas, patch_size).float() for b in boxes]
    else:
        raise ValueError(f"weigh must be 'overlap' or 'touch'; got {weigh!r}")
    return [maps[i] @ m.T for i, m in enumerate(masks)]


@torch.no_grad()
def run_scenes(model: SceneModel, scenes: Scenes, batch_size: int = 256) -> tuple[SetPrediction, Tensor, Tensor]:
    """Predictions, last-layer latent maps [N, l, s] and mean context entropy [depth] of `model` on `scenes`."""
    was_training = model.training
    model.eval()
    logits, boxes, maps, entropy = [], [], [], []
    device = next(model.parameters()).device
    for start in range(0, len(scenes), batch_size):
        prediction, trace = model(scenes.images[start : start + batch_size].to(device), return_trace=True)
        logits.append(prediction.logits.cpu())
        boxes.append(prediction.boxes.cpu())
        maps.append(latent_maps(trace).cpu())
        entropy.append(attention_entropy(image_attention(trace)).sum((1, 2, 3)).cpu())  # [depth]
    model.train(was_training)
    n_rows = len(scenes) * model.config.n_heads * model.config.n_latents
    return SetPrediction(torch.cat(logits), torch.cat(boxes)), torch.cat(maps), sum(entropy) / n_rows


def context_entropy(model: SceneModel, scenes: Scenes) -> float:
    """Mean entropy (nats) of the latents' attention over the context, over layers, heads, latents and scenes."""
    return float(run_scenes(model, scenes)[2].mean())


def evaluate(model: SceneModel, scenes: Scenes, coverage_threshold: float = 0.5) -> dict[str, float]:
    """The figures of a trained SceneModel on `scenes`, in % (entropy in nats).

    object_accuracy     objects whose matched latent names their class
    exact_set_accuracy  scenes where the classes of the latents that see an object are exactly the scene's classes
    object_coverage     objects on which some latent (last layer, mean over heads) puts >= coverage_threshold
                        of its context attention, each patch weighed by its share of pixels in the
                        object's box (`object_attention(..., weigh="overlap")`)
    median_object_attention  median over objects of the largest such share
    object_coverage_touch, median_object_attention_touch  the same, counting every patch the box
                        touches in full (`weigh="touch"`, the measure of earlier versions): higher
    context_entropy     mean attention entropy over the context (nats), all layers
    """
    prediction, maps, entropy = run_scenes(model, scenes)
    canvas = tuple(scenes.images.shape[1:])
    matches = hungarian_match(prediction, scenes.labels, scenes.boxes, canvas)
    guesses = prediction.logits.argmax(-1)  # [N, l]
    right = sum(int((guesses[i, rows] == scenes.labels[i][cols]).sum()) for i, (rows, cols) in enumerate(matches))
    exact = sum(sorted(g[g != NO_OBJECT].tolist()) == sorted(y.tolist()) for g, y in zip(guesses, scenes.labels))
    n_objects = sum(len(y) for y in scenes.labels)
    figures = dict(object_accuracy=100.0 * right / n_objects, exact_set_accuracy=100.0 * exact / len(scenes))
    for weigh, suffix in (("overlap", ""), ("touch", "_touch")):
        shares = object_attention(maps, scenes.boxes, canvas, model.patch_size, weigh)  # per scene [l, k]
        best = torch.cat([share.max(0).values for share in shares])  # [objects]: the best latent's share
        figures["object_coverage" + suffix] = 100.0 * float((best >= coverage_threshold).float().mean())
        figures["median_object_attention" + suffix] = 100.0 * float(best.median())
    figures["context_entropy"] = float(entropy.mean())
    return figures


# -- training -----------------------------------------------------------------------------------


def train_scenes(
    config: ResamplerConfig | None = None,
    *,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    seed: int = 0,
    eval_every: int = 500,
    eval_scenes: int = 200,
    progress: bool = True,
    threads: int | None = 1,
    stop_after: int | None = None,
) -> TrainResult:
    """Train a SceneModel by set prediction on fresh scenes every step; returns the model and its curves.

    history: step, loss, test_accuracy (object accuracy %, held-out scenes) and coverage (%).
    `stop_after`: see training.train.
    Seeded (initial weights and scenes), deterministic on the CPU with `threads` threads (1 by
    default, as in `digits.train_digits`, whose reasons hold here too). Chapter 4's notebook-sized run
    is `train_scenes(steps=250, lr=6e-3)`, about 20 s of CPU: its latents already cover ~74 % of the
    held-out objects, but the classes come only later (the shipped "scenes" ran 3,000 steps at 2e-3).
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        checks.positive_int(name, value)
    model = init_scene_model(config, seed)
    optimizer, schedule = adamw_with_cosine(model, lr, weight_decay, steps)  # as chapter 4's digits
    rng = np.random.default_rng([seed, 2])  # the training scenes: fresh ones every step, from the seed
    pool = _digit_pool("train")
    validation = held_out_scenes(eval_scenes, seed=10_000 + seed)

    def step_loss(step: int) -> Tensor:
        images, labels, boxes = _draw(rng, batch_size, CANVAS, (MIN_OBJECTS, MAX_OBJECTS), pool)
        labels_list = [torch.from_numpy(y[y >= 0]) for y in labels]
        boxes_list = [torch.from_numpy(b[y >= 0]) for b, y in zip(boxes, labels)]
        return set_loss(model(torch.from_numpy(images)), labels_list, boxes_list, (CANVAS, CANVAS))

    def figures(model: nn.Module) -> dict[str, float]:
        held_out = evaluate(model, validation)
        return {"test_accuracy": held_out["object_accuracy"], "coverage": held_out["object_coverage"]}

    return train(
        model,
        step_loss,
        steps=steps,
        optimizer=optimizer,
        schedule=schedule,
        evaluate=figures,
        eval_every=eval_every,
        threads=threads,
        progress=progress,
        stop_after=stop_after,
    )
