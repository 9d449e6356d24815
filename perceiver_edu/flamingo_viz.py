"""Chapter 7's figures: captions, the gates opening, word -> latents -> pixels, the per-image mask.

Each function returns a matplotlib Figure and leaves no pyplot figure open.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor

from . import flamingo as fl
from .scenes import latent_maps, object_attention


def _close(fig: Figure) -> Figure:
    plt.close(fig)
    return fig


def plot_captions(images: Tensor, targets: list[str], predicted: list[str], title: str) -> Figure:
    """One scene per panel; its title says the true caption and the model's (a tick when they agree)."""
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.9), dpi=100, squeeze=False, layout="constrained")
    for ax, image, target, guess in zip(axes[0], images, targets, predicted):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)
        mark = "right" if guess == target else "wrong"
        ax.set_title(f"true: {target}\nsaid: {guess or '(nothing)'}\n({mark})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return _close(fig)


def plot_gates(history: dict[str, list[float]], title: str, eval_scenes: int | None = None) -> Figure:
    """Left: the training loss (and held-out word accuracy) over steps; right: tanh(alpha) of each gated layer's
    two branches over the same steps, from 0 at step 0. history: a TrainResult's, from flamingo.train_flamingo;
    eval_scenes: on how many held-out scenes the accuracy was measured (said on its axis)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4), dpi=100, layout="constrained")
    steps = history["step"]
    left.plot(steps, history["loss"], color="black", marker=".")
    left.set_xlabel("training step")
    left.set_ylabel("next-word loss (nats)")
    left.set_title("the loss")
    if "word_accuracy" in history:
        twin = left.twinx()
        twin.plot(steps, history["word_accuracy"], color="tab:blue", marker=".", linestyle="--")
        on = f", {eval_scenes} scenes" if eval_scenes else ""
        twin.set_ylabel(f"held-out word accuracy (%{on})", color="tab:blue")
    colours = plt.get_cmap("viridis")
    gates = sorted(k for k in history if k.endswith(tuple(f"_gate_{i}" for i in range(16))))
    n = max(1, len(gates) // 2)
    for key in gates:
        kind, index = key.split("_gate_")
        style = "-" if kind == "attn" else ":"
        label = f"layer {index}: {'attention' if kind == 'attn' else 'feed-forward'}"
        # every gate starts closed, tanh(0) = 0, by construction: the curve starts there at step 0
        xs, ys = [0, *steps], [0.0, *history[key]]
        right.plot(xs, ys, style, marker=".", color=colours(int(index) / max(1, n - 1) * 0.8), label=label)
    right.axhline(0, color="grey", linewidth=0.5)
    right.set_xlabel("training step")
    right.set_ylabel("tanh(alpha)")
    right.set_title("the gates (0 = closed: the frozen LM alone)")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, not over them
    for ax in (left, right):
        ax.set_xlim(0, steps[-1])  # both panels over the same steps, from 0
    fig.suptitle(title, fontsize=10)
    return _close(fig)


@torch.no_grad()
def word_pixel_maps(model: fl.TinyFlamingo, images: Tensor, texts: list[str]) -> Tensor:
    """For each scene and each word of its caption (then "<eos>"): the word's attention to the latents, composed
    with the latents' attention to the patches -> maps [b, t - 1, rows, columns], each summing to 1 over the patches.

    images [b, H, W], texts b captions. Word k (token k + 1) is predicted at position k, so its map is that
    position's:
        word_to_latents [l]  = the cross-attention row of position k, mean over heads and gated layers
        latents_to_patches [l, s] = the resampler's last layer, mean over heads, renormalised over the patches
        map [s] = word_to_latents @ latents_to_patches
    Rows past a caption's "<eos>" are padding.
    """
    tokens = fl.encode(texts, fl.CAPTION_LENGTH)
    out = model(images, tokens, return_trace=True)
    cross = torch.stack(out.cross).mean(dim=(0, 2))  # [b, t, (m l)], one image per sequence: m = 1
    patches = latent_maps(out.trace)  # [b, l, s]
    maps = cross[:, :-1] @ patches  # [b, t - 1, s]
    p = model.vision.patch_size
    return maps.reshape(*maps.shape[:2], images.shape[1] // p, images.shape[2] // p)


def plot_word_maps(image: Tensor, words: list[str], maps: Tensor, title: str) -> Figure:
    """The scene, then one panel per word: its word -> latents -> patches map over the scene, one shared colour scale."""
    n = len(words)
    fig, axes = plt.subplots(1, n + 1, figsize=(2.1 * (n + 1), 2.6), dpi=100)
    axes[0].imshow(image, cmap="gray_r", vmin=0, vmax=1)
    axes[0].set_title("the scene", fontsize=9)
    vmax = float(maps.max())
    h, w = image.shape
    for ax, word, m in zip(axes[1:], words, maps):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)
        shown = ax.imshow(m, cmap="magma", alpha=0.65, vmin=0, vmax=vmax, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        ax.set_title(f"word {word!r}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=list(axes), fraction=0.02, label="share of the word's attention (per patch)")
    fig.suptitle(title, fontsize=10)
    return _close(fig)


def plot_media_mask(tokens: Tensor, n_latents: int, title: str) -> Figure:
    """[t] tokens of one sequence with several "<image>": which latents each word may read (1 = allowed)."""
    locations = tokens[None] == fl.IMAGE
    n_media = int(locations.sum())
    allowed = fl.media_mask(locations, n_media, n_latents)[0].float()  # [t, (m l)]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    two = ListedColormap([plt.get_cmap("cividis")(0.0), plt.get_cmap("cividis")(1.0)])  # a yes/no mask: two colours
    shown = ax.imshow(allowed, cmap=two, vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(len(tokens)), [fl.VOCAB[i] for i in tokens.tolist()], fontsize=8)
    ax.set_xticks([(j + 0.5) * n_latents - 0.5 for j in range(n_media)], [f"image {j + 1}" for j in range(n_media)])
    for j in range(1, n_media):
        ax.axvline(j * n_latents - 0.5, color="white", linewidth=1)
    ax.set_xlabel(f"keys: the {n_latents} latents of each image")
    ax.set_ylabel("queries: the words, in order")
    bar = fig.colorbar(shown, ax=ax, ticks=[0.25, 0.75], label="the mask")
    bar.ax.set_yticklabels(["masked (0)", "may read (1)"])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _close(fig)


@torch.no_grad()
def latent_coverage(resampler_owner, scenes, embed, coverage_threshold: float = 0.5) -> dict[str, float]:
    """object_coverage as scenes.evaluate measures it, for any resampler: % of objects on whose patches some latent
    (last layer, mean over heads, renormalised over the patches) puts >= coverage_threshold of its attention.

    resampler_owner: the PerceiverResampler; embed: images [b, H, W] -> context [b, s, e].
    """
    _, trace = resampler_owner(embed(scenes.images), return_trace=True)
    maps = latent_maps(trace)  # [N, l, s]
    canvas = tuple(scenes.images.shape[1:])
    shares = object_attention(maps, scenes.boxes, canvas, 4)
    best = torch.cat([share.max(0).values for share in shares])
    latents_used = torch.cat([(share.max(1).values >= coverage_threshold).float() for share in shares])
    return dict(
        object_coverage=100.0 * float((best >= coverage_threshold).float().mean()),
        median_object_attention=100.0 * float(best.median()),
        latents_on_one_object=100.0 * float(latents_used.mean()),
    )


@torch.no_grad()
def word_map_shares(model: fl.TinyFlamingo, scenes) -> dict[str, Tensor]:
    """Over many scenes, for each digit word the model says rightly (same place as the true caption): the share
    of its word -> latents -> patches map on the patches of that digit's box(es) ("on_digit"), and the share
    those patches hold of the image ("even": what an evenly spread map would put there). Each [n_words]."""
    from .scenes import object_masks

    said = fl.generate(model, scenes.images)
    maps = word_pixel_maps(model, scenes.images, said).flatten(2)  # [b, t - 1, s]
    targets = fl.captions(scenes)
    on_digit, even = [], []
    for i, (guess, target) in enumerate(zip(said, targets)):
        masks = object_masks(scenes.boxes[i], tuple(scenes.images.shape[1:]), model.vision.patch_size)  # [k, s]
        for k, (a, b) in enumerate(zip(guess.split(), target.split())):
            if a != b:
                continue
            patches = masks[scenes.labels[i] == int(a)].any(0)  # [s]
            on_digit.append(float(maps[i, k][patches].sum()))
            even.append(float(patches.float().mean()))
    return dict(on_digit=torch.tensor(on_digit), even=torch.tensor(even))
