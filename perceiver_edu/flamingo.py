"""A tiny Flamingo: the resampler trained end to end through a frozen language model's loss.

Flamingo (Alayrac et al., 2022) never trains its resampler on its own. A frozen vision encoder
turns each image into tokens, the resampler (trained from scratch) squeezes them into l latents,
and gated cross-attention layers, inserted before the layers of a frozen language model, let the
text read those latents. Only the resampler and the gated layers learn, from the LM's next-word
loss. Here every part is small enough to train in minutes on a CPU:

    images [b, m, H, W] -> VisionEncoder (frozen: the "scenes" model's CNN + positions) -> [b, m, s, e]
                        -> PerceiverResampler (trained)                                 -> [b, m, l, e]
    tokens [b, t] -> TinyLM embedding (frozen)                                          -> [b, t, e]
        for each LM layer: GatedCrossAttentionBlock (trained; text asks, latents answer) then the
                           frozen LM layer (causal self-attention + MLP)
    -> logits [b, t, V]

The task: caption a scene of 2-4 digits with its digits in ascending order, "<image> 2 5 7 <eos>".
Each gate is tanh(alpha) with alpha = 0 at the start, so before training the tiny Flamingo *is*
the frozen LM, to the last bit. `media_locations` (the <image> tokens) decides which image a word
may read: only the latest one before it, as in Flamingo.

Letters: b batch, t text tokens, m images (media) per sequence, s patches per image, l latents,
h heads, d head dim, e embed dim, V vocabulary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from . import steps
from .config import ResamplerConfig
from .modules import FeedForward, LayerNorm, PerceiverResampler, scale_qk_
from .scenes import (
    BACKBONE_CHANNELS,
    CANVAS,
    MAX_OBJECTS,
    MIN_OBJECTS,
    SceneModel,
    Scenes,
    _digit_pool,
    _draw,
    backbone,
    held_out_scenes,
)
from .training import TrainResult, train

# -- words --------------------------------------------------------------------------------------

VOCAB = ("<pad>", "<image>", "<eos>", *(str(d) for d in range(10)))
PAD, IMAGE, EOS = 0, 1, 2
DIGIT0 = 3  # the token of digit d is DIGIT0 + d
ORDERS = ("ascending", "left-to-right")


def caption(labels: Tensor, boxes: Tensor | None = None, order: str = "ascending") -> str:
    """The caption of one scene: its digits, "2 5 7", in ascending order or from left to right (by box)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}; got {order!r}")
    if order == "ascending":
        digits = sorted(int(d) for d in labels)
    else:
        if boxes is None:
            raise ValueError("order='left-to-right' needs the boxes of the digits")
        digits = [
            int(labels[i]) for i in sorted(range(len(labels)), key=lambda i: (int(boxes[i][1]), int(boxes[i][0])))
        ]
    return " ".join(str(d) for d in digits)


def captions(scenes: Scenes, order: str = "ascending") -> list[str]:
    """The caption of every scene."""
    return [caption(y, b, order) for y, b in zip(scenes.labels, scenes.boxes)]


def encode(texts: list[str], length: int | None = None) -> Tensor:
    """Captions -> tokens [b, t]: "<image>", the digits, "<eos>", then "<pad>" up to `length`.

    A caption may hold several images: "2 5 | 1 3" is "<image> 2 5 <eos> <image> 1 3 <eos>".
    """
    rows = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"a caption must be a str of digits such as '2 5 7'; got {type(text).__name__}")
        row = []
        for part in text.split("|"):
            words = part.split()
            bad = [w for w in words if w not in VOCAB[DIGIT0:]]
            if bad:
                raise ValueError(f"a caption holds digits 0-9 separated by spaces; got {bad[0]!r} in {text!r}")
            row += [IMAGE, *(DIGIT0 + int(w) for w in words), EOS]
        rows.append(row)
    length = max(len(r) for r in rows) if length is None else length
    if any(len(r) > length for r in rows):
        raise ValueError(f"a caption is {max(len(r) for r in rows)} tokens long, more than length={length}")
    return torch.tensor([r + [PAD] * (length - len(r)) for r in rows], dtype=torch.long)


def decode(tokens: Tensor) -> str:
    """[t] -> the caption's words, stopping at "<eos>"; "<image>" and "<pad>" are skipped."""
    words = []
    for token in tokens.tolist():
        if token == EOS:
            break
        if token >= DIGIT0:
            words.append(VOCAB[token])
    return " ".join(words)


# -- steps of the LM and of the gated cross-attention (pure functions, shapes in the docstrings) --


def causal_mask(t: int, device: torch.device | str = "cpu") -> Tensor:
    """[t, t] bool: word i may attend to words 0..i (True = allowed), so no word sees the future."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


def media_time(media_locations: Tensor) -> Tensor:
    """[b, t] bool (True at each "<image>") -> [b, t] long: the number of the latest image at or before each word.

    0 means no image yet. A running count: the k-th "<image>" and every word after it until the next
    one get k (Flamingo's `text_time`).
    """
    return media_locations.long().cumsum(dim=-1)


def media_mask(media_locations: Tensor, n_media: int, n_latents: int) -> Tensor:
    """[b, t] bool -> [b, t, (m l)] bool: word i may read the l latents of image j only if j is its latest image.

    Flamingo's rule (only_attend_immediate_media): a word reads one image, the one just before it;
    earlier images reach it only through the earlier words, via the LM's own self-attention.
    """
    image_of_word = media_time(media_locations)  # [b, t]
    images = torch.arange(1, n_media + 1, device=media_locations.device)  # [m]
    allowed = rearrange(image_of_word, "b t -> b t 1") == images  # [b, t, m]
    return repeat(allowed, "b t m -> b t (m l)", l=n_latents)


def mask_rows(scores: Tensor, allowed: Tensor) -> Tensor:
    """[b, h, t, n], [b, t, n] bool -> [b, h, t, n]: forbidden keys get the most negative float.

    Not -inf: a word with no image before it has no allowed key at all, and a softmax over a row of
    -inf is NaN; with a finite minimum the row stays finite (uniform), and `zero_without_media` then
    sets it to 0.
    """
    return scores.masked_fill(~rearrange(allowed, "b t n -> b 1 t n"), torch.finfo(scores.dtype).min)


def zero_without_media(attn: Tensor, media_locations: Tensor) -> Tensor:
    """[b, h, t, n] -> [b, h, t, n]: words before the first image read nothing (their attention rows become 0)."""
    has_media = rearrange(media_time(media_locations) > 0, "b t -> b 1 t 1")
    return attn * has_media


def gate(update: Tensor, alpha: Tensor) -> Tensor:
    """[b, t, e], [1] -> [b, t, e]: tanh(alpha) * update. With alpha = 0 the branch adds exactly nothing.

    tanh keeps the gate in (-1, 1), so a new layer can never swamp the frozen LM's stream, and
    opens it smoothly as alpha moves away from 0.
    """
    return torch.tanh(alpha) * update


# -- the modules ---------------------------------------------------------------------------------


def _feed_forward(embed_dim: int) -> FeedForward:
    """Norm -> Linear e -> 4e -> GELU -> Linear 4e -> e (modules.FeedForward with Flamingo's GELU)."""
    return FeedForward(ResamplerConfig(embed_dim=embed_dim, mlp="gelu"))


class MaskedCrossAttention(nn.Module):
    """Text [b, t, e] asks, the latents of its image [b, m, l, e] answer (Flamingo's masked cross-attention).

    Only the text is normalised here: the latents come out of the resampler's final LayerNorm.
    """

    def __init__(self, embed_dim: int = 64, n_heads: int = 4, head_dim: int = 16) -> None:
        super().__init__()
        self.n_heads = n_heads
        inner = n_heads * head_dim
        self.text_layer_norm = LayerNorm(embed_dim)
        self.q_proj = nn.Linear(embed_dim, inner, bias=False)
        self.k_proj = nn.Linear(embed_dim, inner, bias=False)
        self.v_proj = nn.Linear(embed_dim, inner, bias=False)
        self.output_proj = nn.Linear(inner, embed_dim, bias=False)

    def forward(self, x: Tensor, media: Tensor, media_locations: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [b, t, e], media [b, m, l, e], media_locations [b, t] bool or None (every word reads every image)
        -> (update [b, t, e], attn [b, h, t, (m l)])."""
        b, m, l, _ = media.shape
        text = self.text_layer_norm(x)  # [b, t, e]
        media = rearrange(media, "b m l e -> b (m l) e")  # every image's latents in one row of keys
        q = steps.split_heads(steps.project(text, self.q_proj.weight), self.n_heads)  # [b, h, t, d]
        k = steps.split_heads(steps.project(media, self.k_proj.weight), self.n_heads)  # [b, h, (m l), d]
        v = steps.split_heads(steps.project(media, self.v_proj.weight), self.n_heads)  # [b, h, (m l), d]
        scores = steps.attention_scores(q, k)  # [b, h, t, (m l)]
        if media_locations is not None:
            scores = mask_rows(scores, media_mask(media_locations, m, l))
        attn = steps.stable_softmax(scores)  # [b, h, t, (m l)]
        if media_locations is not None:
            attn = zero_without_media(attn, media_locations)
        out = steps.merge_heads(steps.weighted_sum(attn, v))  # [b, t, (h d)]
        return steps.project(out, self.output_proj.weight), attn


class GatedCrossAttentionBlock(nn.Module):
    """x [b, t, e] -> x + tanh(attn_gate) * cross_attention, then + tanh(ff_gate) * feed_forward.

    Flamingo's GATED XATTN-DENSE. Both gates (the alphas) start at 0: the block passes x through
    unchanged until training opens them.
    """

    def __init__(self, embed_dim: int = 64, n_heads: int = 4, head_dim: int = 16) -> None:
        super().__init__()
        self.cross_attention = MaskedCrossAttention(embed_dim, n_heads, head_dim)
        self.attn_gate = nn.Parameter(torch.zeros(1))  # alpha of the attention branch
        self.feed_forward = _feed_forward(embed_dim)
        self.ff_gate = nn.Parameter(torch.zeros(1))  # alpha of the feed-forward branch

    def forward(self, x: Tensor, media: Tensor, media_locations: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [b, t, e], media [b, m, l, e], media_locations [b, t] -> (x [b, t, e], attn [b, h, t, (m l)])."""
        update, attn = self.cross_attention(x, media, media_locations)
        x = steps.add_residual(x, gate(update, self.attn_gate))
        x = steps.add_residual(x, gate(self.feed_forward(x), self.ff_gate))
        return x, attn


@dataclass(frozen=True)
class LMConfig:
    """The tiny language model: vocab_size words, embed_dim e, depth layers of n_heads x head_dim, max_len positions."""

    vocab_size: int = len(VOCAB)
    embed_dim: int = 64
    depth: int = 2
    n_heads: int = 4
    head_dim: int = 16
    max_len: int = 16

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    """x [b, t, e] -> update [b, t, e]: each word attends to itself and the words before it."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        e, inner = config.embed_dim, config.n_heads * config.head_dim
        self.n_heads = config.n_heads
        self.layer_norm = LayerNorm(e)
        self.q_proj = nn.Linear(e, inner, bias=False)
        self.k_proj = nn.Linear(e, inner, bias=False)
        self.v_proj = nn.Linear(e, inner, bias=False)
        self.output_proj = nn.Linear(inner, e, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """[b, t, e] -> [b, t, e]"""
        h = self.layer_norm(x)
        q, k, v = (
            steps.split_heads(steps.project(h, p.weight), self.n_heads) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        scores = steps.attention_scores(q, k)  # [b, h, t, t]
        allowed = repeat(causal_mask(x.shape[1], x.device), "i j -> b i j", b=x.shape[0])
        attn = steps.stable_softmax(mask_rows(scores, allowed))  # [b, h, t, t]
        return steps.project(steps.merge_heads(steps.weighted_sum(attn, v)), self.output_proj.weight)


class LMLayer(nn.Module):
    """One decoder layer, pre-norm: x + self_attention(x), then + feed_forward(x)."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.self_attention = CausalSelfAttention(config)
        self.feed_forward = _feed_forward(config.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = steps.add_residual(x, self.self_attention(x))
        return steps.add_residual(x, self.feed_forward(x))


class TinyLM(nn.Module):
    """tokens [b, t] -> logits [b, t, V]: word + position embeddings, `depth` decoder layers, a norm, a head.

    The logits at position i predict word i + 1. Pretrained on the captions' text alone
    (`lm_step_loss`), then frozen inside the TinyFlamingo.
    """

    def __init__(self, config: LMConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or LMConfig()
        self.token_embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.position_embed = nn.Parameter(torch.randn(config.max_len, config.embed_dim) * 0.02)
        self.layers = nn.ModuleList(LMLayer(config) for _ in range(config.depth))
        self.layer_norm = LayerNorm(config.embed_dim)
        self.head = nn.Linear(config.embed_dim, config.vocab_size, bias=False)

    def embed(self, tokens: Tensor) -> Tensor:
        """[b, t] -> [b, t, e]: what each word is, plus where it is."""
        check_tokens(tokens, self.config)
        return self.token_embed(tokens) + self.position_embed[: tokens.shape[1]]

    def logits(self, x: Tensor) -> Tensor:
        """[b, t, e] -> [b, t, V]"""
        return self.head(self.layer_norm(x))

    def forward(self, tokens: Tensor) -> Tensor:
        """[b, t] -> [b, t, V]"""
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.logits(x)


def check_tokens(tokens: Any, config: LMConfig) -> None:
    """Refuse tokens the LM cannot read, saying what it expects."""
    if not isinstance(tokens, Tensor):
        raise TypeError(
            f"tokens must be a torch.Tensor of shape [b, t] (see flamingo.encode); got {type(tokens).__name__}"
        )
    if tokens.dim() != 2:
        hint = " For one caption add a batch axis: tokens[None]." if tokens.dim() == 1 else ""
        raise ValueError(f"tokens must have shape [b, t]; got {tuple(tokens.shape)}.{hint}")
    if tokens.dtype != torch.long:
        raise TypeError(f"tokens must be integers (torch.long) from flamingo.encode; got dtype {tokens.dtype}")
    if tokens.shape[1] > config.max_len:
        raise ValueError(f"tokens has {tokens.shape[1]} words but the LM has only max_len={config.max_len} positions")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= config.vocab_size):
        raise ValueError(f"tokens must lie in 0..{config.vocab_size - 1} (the vocabulary flamingo.VOCAB)")


class VisionEncoder(nn.Module):
    """images [b, H, W] -> patch tokens [b, s, e]: the CNN, patch features and Fourier positions of a SceneModel.

    Flamingo's vision encoder is pretrained (contrastively), then frozen; ours is the "scenes"
    model's embedding, trained by set prediction, then frozen.
    """

    def __init__(self, embed_dim: int = 64, patch_size: int = 4, n_bands: int = 6, max_freq: float = 8.0) -> None:
        super().__init__()
        self.patch_size, self.n_bands, self.max_freq = patch_size, n_bands, max_freq
        self.backbone = backbone()
        self.pixels = nn.Linear(BACKBONE_CHANNELS * (patch_size // 2) ** 2, embed_dim)
        self.position = nn.Linear(2 * (1 + 2 * n_bands), embed_dim)

    embed = SceneModel.embed  # the very same function as the scenes model's: nothing written twice

    def forward(self, images: Tensor) -> Tensor:
        """[b, H, W] -> [b, s, e]"""
        return self.embed(images)

    @classmethod
    def from_scene_model(cls, model: SceneModel) -> VisionEncoder:
        """The embedding part of a trained SceneModel (its weights copied)."""
        encoder = cls(model.config.embed_dim, model.patch_size, model.n_bands, model.max_freq)
        state = {k: v for k, v in model.state_dict().items() if k.split(".")[0] in ("backbone", "pixels", "position")}
        encoder.load_state_dict(state)
        return encoder


FEEDS = ("resampler", "patches", "tokens")


@dataclass
class FlamingoOutput:
    """logits [b, t, V]; latents [b, m, l, e] (or the patches with feed="patches"); cross [one attn per gated layer,
    [b, h, t, (m l)]]; trace: the resampler's Trace (return_trace=True), its media folded into the batch."""

    logits: Tensor
    latents: Tensor
    cross: list[Tensor]
    trace: Any = None


class TinyFlamingo(nn.Module):
    """(images [b, H, W] or [b, m, H, W], tokens [b, t]) -> logits [b, t, V].

    vision     VisionEncoder, frozen
    resampler  PerceiverResampler, trained from scratch ([b, m, s, e] -> [b, m, l, e])
    gated      one GatedCrossAttentionBlock before each LM layer in `cross_layers`, trained
    lm         TinyLM, frozen

    feed picks how the LM reads the image (chapter 7 compares them on the same budget):
      "resampler"  the l latents, through the gated cross-attention (Flamingo)
      "patches"    all s patch tokens, through the gated cross-attention (no resampler)
      "tokens"     the l latents as l extra words before the text, read by the LM's own
                   self-attention (Idefics2's way; no gated layers, one image per sequence)
    """

    def __init__(
        self,
        lm: TinyLM,
        vision: VisionEncoder,
        resampler: ResamplerConfig | None = None,
        cross_layers: tuple[int, ...] | None = None,
        cross_heads: int = 4,
        cross_head_dim: int = 16,
        feed: str = "resampler",
    ) -> None:
        super().__init__()
        if feed not in FEEDS:
            raise ValueError(f"feed must be one of {FEEDS}; got {feed!r}")
        e = lm.config.embed_dim
        self.feed = feed
        self.vision, self.lm = vision, lm
        self.resampler_config = resampler or ResamplerConfig(embed_dim=e, depth=2, n_heads=4, head_dim=16, n_latents=8)
        self.resampler = PerceiverResampler(self.resampler_config) if feed != "patches" else None
        self.cross_layers = tuple(range(lm.config.depth)) if cross_layers is None else tuple(cross_layers)
        if feed == "tokens":
            self.cross_layers = ()
        self.gated = nn.ModuleDict(
            {str(i): GatedCrossAttentionBlock(e, cross_heads, cross_head_dim) for i in self.cross_layers}
        )
        self.freeze_()

    def freeze_(self) -> TinyFlamingo:
        """The vision encoder and the LM do not learn (requires_grad False); the rest does."""
        for part in (self.vision, self.lm):
            for p in part.parameters():
                p.requires_grad_(False)
        return self

    def encode_images(self, images: Tensor, return_trace: bool = False) -> tuple[Tensor, Any]:
        """[b, H, W] | [b, m, H, W] -> ([b, m, l, e] latents, or [b, m, s, e] patches with feed="patches"; trace)."""
        if isinstance(images, Tensor) and images.dim() == 3:
            images = images[:, None]
        if not isinstance(images, Tensor) or images.dim() != 4:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must have shape [b, H, W] or [b, m, H, W] (m images per sequence); got {got}")
        b, m = images.shape[:2]
        patches = self.vision(rearrange(images, "b m y x -> (b m) y x"))  # [(b m), s, e]
        if self.resampler is None:
            return rearrange(patches, "(b m) s e -> b m s e", m=m), None
        if return_trace:
            latents, trace = self.resampler(patches, return_trace=True)
        else:
            latents, trace = self.resampler(patches), None
        return rearrange(latents, "(b m) l e -> b m l e", m=m), trace

    def forward(self, images: Tensor, tokens: Tensor, return_trace: bool = False) -> Tensor | FlamingoOutput:
        """images [b, H, W] / [b, m, H, W], tokens [b, t] -> logits [b, t, V] (or a FlamingoOutput)."""
        check_tokens(tokens, self.lm.config)
        media, trace = self.encode_images(images, return_trace)  # [b, m, l, e]
        if media.shape[0] != tokens.shape[0]:
            raise ValueError(f"images hold {media.shape[0]} sequences but tokens {tokens.shape[0]}; they must match")
        cross: list[Tensor] = []
        if self.feed == "tokens":
            logits = self.forward_as_tokens(media, tokens)
        else:
            x = self.lm.embed(tokens)  # [b, t, e]
            media_locations = tokens == IMAGE  # [b, t]
            for i, layer in enumerate(self.lm.layers):
                if str(i) in self.gated:
                    x, attn = self.gated[str(i)](x, media, media_locations)
                    cross.append(attn)
                x = layer(x)
            logits = self.lm.logits(x)  # [b, t, V]
        if not return_trace:
            return logits
        return FlamingoOutput(logits, media, cross, trace)

    def forward_as_tokens(self, media: Tensor, tokens: Tensor) -> Tensor:
        """Idefics2's way: the l latents of the one image go in front of the words; the LM reads them all.

        The latents get no position (the frozen LM's positions stay those of the words), and the causal
        mask lets every word read every latent. Returns the logits of the words only, [b, t, V].
        """
        if media.shape[1] != 1:
            raise ValueError(f"feed='tokens' takes one image per sequence; got {media.shape[1]}")
        latents = media[:, 0]  # [b, l, e]
        x = torch.cat([latents, self.lm.embed(tokens)], dim=1)  # [b, l + t, e]
        for layer in self.lm.layers:
            x = layer(x)
        return self.lm.logits(x[:, latents.shape[1] :])

    def gates(self) -> dict[str, list[float]]:
        """tanh(alpha) of each gated layer: {"attn": [...], "ff": [...]} in layer order."""
        blocks = list(self.gated.values())
        return {
            "attn": [float(torch.tanh(b.attn_gate.detach())) for b in blocks],
            "ff": [float(torch.tanh(b.ff_gate.detach())) for b in blocks],
        }

    def spec(self) -> dict[str, Any]:
        """The constructor arguments, as saved next to the weights."""
        block = next(iter(self.gated.values()), None)
        return dict(
            lm=self.lm.config.to_dict(),
            resampler=self.resampler_config.to_dict(),
            cross_layers=list(self.cross_layers),
            cross_heads=block.cross_attention.n_heads if block else 4,
            cross_head_dim=block.cross_attention.q_proj.out_features // block.cross_attention.n_heads if block else 16,
            feed=self.feed,
            vision=dict(patch_size=self.vision.patch_size, n_bands=self.vision.n_bands, max_freq=self.vision.max_freq),
        )


# -- data, losses, captioning and metrics ---------------------------------------------------------


def draw_scenes(rng: np.random.Generator, n: int) -> Scenes:
    """n fresh training scenes (training digits) from a numpy Generator: what one step trains on."""
    images, labels, boxes = _draw(rng, n, CANVAS, (MIN_OBJECTS, MAX_OBJECTS), _digit_pool("train"))
    keep = [row >= 0 for row in labels]
    return Scenes(
        torch.from_numpy(images),
        [torch.from_numpy(y[k]) for y, k in zip(labels, keep)],
        [torch.from_numpy(b[k]) for b, k in zip(boxes, keep)],
    )


def next_word_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """logits [b, t, V], tokens [b, t] -> the mean cross-entropy of predicting word i + 1 at position i (padding ignored)."""
    return F.cross_entropy(
        rearrange(logits[:, :-1], "b t v -> (b t) v"), rearrange(tokens[:, 1:], "b t -> (b t)"), ignore_index=PAD
    )


CAPTION_LENGTH = MAX_OBJECTS + 2  # "<image>", up to 4 digits, "<eos>"


@torch.no_grad()
def generate(
    model: TinyFlamingo | TinyLM, images: Tensor | None, n: int | None = None, max_words: int = MAX_OBJECTS + 1
) -> list[str]:
    """Greedy captions: start from "<image>", append the likeliest word until "<eos>" (or max_words words).

    model a TinyFlamingo with images [b, H, W], or a TinyLM alone (images None, n captions).
    """
    b = images.shape[0] if images is not None else n
    tokens = torch.full((b, 1), IMAGE, dtype=torch.long)
    done = torch.zeros(b, dtype=torch.bool)
    for _ in range(max_words):
        logits = model(tokens) if images is None else model(images, tokens)
        word = logits[:, -1].argmax(-1)  # [b]
        word = torch.where(done, torch.full_like(word, PAD), word)
        tokens = torch.cat([tokens, word[:, None]], dim=1)
        done |= word == EOS
        if bool(done.all()):
            break
    return [decode(row) for row in tokens]


def caption_scores(predicted: list[str], targets: list[str]) -> dict[str, float]:
    """word_accuracy: % of target words matched at the same place; exact_caption: % of captions right word for word."""
    right = sum(sum(a == b for a, b in zip(p.split(), t.split())) for p, t in zip(predicted, targets))
    n_words = sum(len(t.split()) for t in targets)
    exact = sum(p == t for p, t in zip(predicted, targets))
    return dict(word_accuracy=100.0 * right / n_words, exact_caption=100.0 * exact / len(targets))


def evaluate_captions(
    model: TinyFlamingo, scenes: Scenes, order: str = "ascending", batch_size: int = 500
) -> dict[str, float]:
    """Word accuracy and exact captions (%) of greedy captions of `scenes`."""
    was_training = model.training
    model.eval()
    predicted = []
    for start in range(0, len(scenes), batch_size):
        predicted += generate(model, scenes.images[start : start + batch_size])
    model.train(was_training)
    return caption_scores(predicted, captions(scenes, order))


# -- training: the LM on text alone, then the tiny Flamingo through the frozen LM ----------------


def caption_batch(rng: np.random.Generator, batch_size: int, order: str = "ascending") -> tuple[Scenes, Tensor]:
    """One step's batch: fresh training scenes and their captions' tokens [b, CAPTION_LENGTH]."""
    scenes = draw_scenes(rng, batch_size)
    return scenes, encode(captions(scenes, order), CAPTION_LENGTH)


def pretrain_lm(
    config: LMConfig | None = None,
    *,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    order: str = "ascending",
    progress: bool = True,
    threads: int | None = 1,
    stop_after: int | None = None,
) -> TrainResult:
    """Train a TinyLM on the captions' text alone (no image): it learns what captions look like, not what is in a scene.

    history: step, loss, and the LM's own greedy captions' scores on held-out scenes (chance-level:
    with no image, the best it can do is the likeliest caption).
    """
    torch.manual_seed(seed)
    lm = TinyLM(config)
    rng = np.random.default_rng([seed, 5])  # the training captions, from the seed
    validation = held_out_scenes(200, seed=10_000 + seed)
    targets = captions(validation, order)

    def step_loss(step: int) -> Tensor:
        _, tokens = caption_batch(rng, batch_size, order)
        return next_word_loss(lm(tokens), tokens)

    def metrics(model: TinyLM) -> dict[str, float]:
        return caption_scores(generate(model, None, n=len(targets)), targets)

    optimizer, schedule = one_cycle(lm, lr, steps, weight_decay)
    return train(
        lm,
        step_loss,
        steps=steps,
        optimizer=optimizer,
        schedule=schedule,
        evaluate=metrics,
        eval_every=max(1, steps // 4),
        threads=threads,
        progress=progress,
        stop_after=stop_after,
    )


def one_cycle(model: nn.Module, lr: float, steps: int, weight_decay: float = 0.01, gate_lr: float | None = None):
    """(optimizer, schedule): AdamW over the trainable weights (decay on matrices only), one-cycle rate peaking at lr.

    The gates (alphas) may get their own peak rate `gate_lr`; they are never decayed (decay would
    pull them back to closed).
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gates = [p for n, p in trainable if n.endswith("_gate")]
    decay = [p for n, p in trainable if p.dim() >= 2 and not n.endswith("_gate")]
    no_decay = [p for n, p in trainable if p.dim() < 2 and not n.endswith("_gate")]
    groups = [dict(params=decay, weight_decay=weight_decay, lr=lr), dict(params=no_decay, weight_decay=0.0, lr=lr)]
    if gates:
        groups.append(dict(params=gates, weight_decay=0.0, lr=gate_lr or lr))
    optimizer = torch.optim.AdamW(groups, lr=lr)
    # one cycle: the rate climbs to its peak over the first 30 % of the steps, then anneals to ~0
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, [g["lr"] for g in groups], total_steps=steps, pct_start=0.3
    )
    return optimizer, schedule


def build_flamingo(
    lm: TinyLM,
    vision: VisionEncoder,
    *,
    n_latents: int = 8,
    resampler_depth: int = 2,
    cross_layers: tuple[int, ...] | None = None,
    feed: str = "resampler",
    qk_init_gain: float = 1.0,
    seed: int = 0,
) -> TinyFlamingo:
    """A TinyFlamingo around a (trained) LM and a vision encoder, both frozen, its new parts seeded.

    The shipped model's encoder is the "scenes" model's: VisionEncoder.from_scene_model(pe.pretrained("scenes")).

    qk_init_gain scales the resampler's q and k projections at the start (`modules.scale_qk_`), as the
    scenes model does: the latents start with sharper, more different views.
    """
    if not isinstance(lm, TinyLM):
        raise TypeError(f"lm must be a flamingo.TinyLM (e.g. pe.pretrained('tiny-lm')); got {type(lm).__name__}")
    if not isinstance(vision, VisionEncoder):
        raise TypeError(
            "vision must be a flamingo.VisionEncoder, e.g. VisionEncoder.from_scene_model(pe.pretrained('scenes')); "
            f"got {type(vision).__name__}"
        )
    torch.manual_seed(seed)
    e = lm.config.embed_dim
    config = ResamplerConfig(embed_dim=e, depth=resampler_depth, n_heads=4, head_dim=16, n_latents=n_latents)
    model = TinyFlamingo(lm.eval(), vision.eval(), config, cross_layers=cross_layers, feed=feed)
    if model.resampler is not None and qk_init_gain != 1.0:
        scale_qk_(model.resampler, qk_init_gain)
    return model


def train_flamingo(
    model: TinyFlamingo,
    *,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 5e-3,
    gate_lr: float | None = None,
    weight_decay: float = 0.01,
    seed: int = 0,
    order: str = "ascending",
    eval_every: int = 250,
    eval_scenes: int = 200,
    progress: bool = True,
    threads: int | None = 1,
    stop_after: int | None = None,
) -> TrainResult:
    """Train the resampler and the gated layers of `model` through the frozen LM's next-word loss on fresh scenes.

    history: step, loss, word_accuracy and exact_caption (%, greedy, held-out scenes), and each gated
    layer's tanh(alpha): attn_gate_i and ff_gate_i for the i-th gated layer.
    """
    if not isinstance(model, TinyFlamingo):
        raise TypeError(f"model must be a flamingo.TinyFlamingo (see build_flamingo); got {type(model).__name__}")
    rng = np.random.default_rng([seed, 3])  # the training scenes, from the seed
    validation = held_out_scenes(eval_scenes, seed=10_000 + seed)

    def step_loss(step: int) -> Tensor:
        scenes, tokens = caption_batch(rng, batch_size, order)
        return next_word_loss(model(scenes.images, tokens), tokens)

    def metrics(model: TinyFlamingo) -> dict[str, float]:
        figures = evaluate_captions(model, validation, order)
        for kind, values in model.gates().items():
            figures.update({f"{kind}_gate_{i}": v for i, v in enumerate(values)})
        return figures

    optimizer, schedule = one_cycle(model, lr, steps, weight_decay, gate_lr)
    result = train(
        model,
        step_loss,
        steps=steps,
        optimizer=optimizer,
        schedule=schedule,
        evaluate=metrics,
        eval_every=eval_every,
        threads=threads,
        progress=progress,
        stop_after=stop_after,
    )
    model.freeze_()  # (train() put everything in eval mode; nothing frozen was touched)
    return result


def image_flops(model: TinyFlamingo, words: int = CAPTION_LENGTH) -> dict[str, int]:
    """FLOPs of one caption of `words` tokens, counted by PyTorch's FlopCounterMode (matrix products):

    vision_flops     the frozen encoder on one image
    resampler_flops  the resampler (0 without one)
    lm_flops         the frozen LM alone on the words
    reading_flops    what reading the image adds on the LM's side: the gated layers, or the LM's work on
                     the l extra tokens (feed="tokens"); the figure chapter 6's cost compares
    """
    from torch.utils.flop_counter import FlopCounterMode

    def count(fn) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        return int(counter.get_total_flops())

    images = torch.zeros(1, CANVAS, CANVAS)
    tokens = encode(["1 2 3 4"], words)[:, :words]
    vision = count(lambda: model.vision(images))
    media = model.vision(images)
    resampler = count(lambda: model.resampler(media)) if model.resampler is not None else 0
    lm = count(lambda: model.lm(tokens))
    total = count(lambda: model(images, tokens))
    return dict(
        vision_flops=vision, resampler_flops=resampler, lm_flops=lm, reading_flops=total - vision - resampler - lm
    )
