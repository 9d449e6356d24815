"""What the resampler costs, by formula: FLOPs and memory per step, and what it saves downstream.

A FLOP here is one multiply or one add, so a multiply-add counts 2 and `x [m, k] @ w [k, n]` costs
2 m k n (the convention of torch.utils.flop_counter, which the tests hold these formulas to, for
every preset). Only the matrix products are counted: norms, softmax, activations and residual adds
touch each number a few times, O(b n e) in all: small next to the products, but not free (memory
traffic, which a fused kernel saves). Measuring time and memory is `measure.py`'s job.

The formulas follow the config's seams: g k/v heads (grouped-query attention; g = h without it)
make k_proj and v_proj narrower, but every one of the h query heads still scores all n keys; a
SwiGLU MLP has three matrices, ReLU and GELU two. Media and frames are resampled one media at a
time: pass b = examples x media and s = tokens per media (f v with frames).

Two arrangements of the same maths (chapter 6):

- "standard" (the step model, transformers): project every key/value token to g heads of d,
  then attend.                               context k/v: 2 * (2 b n e g d)
- "absorbed" (FastResampler): fold k_proj into the queries and v_proj after the weighted sum, so the
  latents meet the keys/values in embedding space (width e) and no context token is projected.
                                             context k/v: 2 * (2 b h l n e) + 2 * (2 b h l d e)
  Cheaper when l < d and n is large; impossible with QK-norm, whose LayerNorm on k is not linear.

Letters: b batch, s context length, l latents, h heads, g k/v heads, d head dim, e embed dim,
n keys (s + l).
"""

from __future__ import annotations

from .config import ResamplerConfig

# Measuring lives in measure.py; chapter 6 calls these three as cost.x (kept until it calls measure.x).
from .measure import median_ratio, peak_memory, time_interleaved  # noqa: F401  (re-exported)
from .modules import MLPS

ARRANGEMENTS = ("standard", "absorbed")


def n_keys(config: ResamplerConfig, s: int) -> int:
    """n: how many tokens the latents attend to, s + l when the latents join the keys/values."""
    return s + config.n_latents if config.latents_in_kv else s


KEY_PADDING = 16  # FastResampler's absorbed arrangement rounds the keys up to a multiple of this (64 bytes of float32)


def padded_keys(n: int, multiple: int = KEY_PADDING) -> int:
    """n rounded up to a multiple of `multiple`: how many keys FastResampler's absorbed arrangement
    multiplies when it runs without gradients (the extra keys are zero and get zero weight; why it
    pads, and what that saves, is in fast.py and chapter 6)."""
    return -(-n // multiple) * multiple


def mlp_matrices(config: ResamplerConfig) -> tuple[str, ...]:
    """The MLP's weight matrices, each e x 4e or 4e x e: ("fc", "c_proj"), or SwiGLU's three."""
    return MLPS[config.mlp][1]


def mlp_step(config: ResamplerConfig) -> str:
    """The name `step_flops` gives the MLP's products, e.g. "mlp (fc, c_proj)"."""
    return f"mlp ({', '.join(mlp_matrices(config))})"


def step_flops(
    config: ResamplerConfig,
    b: int,
    s: int,
    arrangement: str = "standard",
    cached_first_layer: bool = False,
    padded: bool = False,
) -> dict[str, int]:
    """FLOPs of each matrix-product step, summed over the `depth` layers: {step name: FLOPs}.

    b           examples (times media, for a context [b, m, s, e] or [b, m, f, v, e])
    s           context tokens per media (f v with frames)
    cached_first_layer: the first layer's latents are parameters, so what depends only on them
    (q_proj, and k_proj/v_proj of the latents or the absorbed queries) can be computed once per
    change of the weights and kept: a call then does none of them. FastResampler does this
    (after its first call); the step model does neither.
    padded: count the absorbed arrangement's two attention products over `padded_keys(n)` keys, as
    FastResampler runs them without gradients (the zero keys it adds are multiplied too).
    """
    if arrangement not in ARRANGEMENTS:
        raise ValueError(f"arrangement must be one of {ARRANGEMENTS}; got {arrangement!r}")
    if arrangement == "absorbed" and config.qk_norm:
        raise ValueError("the absorbed arrangement does not exist with qk_norm=True: LayerNorm on k is not linear")
    e, depth, h, d, l = config.embed_dim, config.depth, config.n_heads, config.head_dim, config.n_latents
    g = config.kv_heads  # k/v heads: h, or fewer with grouped-query attention
    n = n_keys(config, s)
    lat = l if config.latents_in_kv else 0  # latent tokens among the keys
    # b_lat[i]: how many latents sets layer i projects (none at the first layer when kept)
    b_lat = [0 if (i == 0 and cached_first_layer) else b for i in range(depth)]
    flops: dict[str, int] = {}
    flops["q_proj"] = sum(2 * bl * l * e * h * d for bl in b_lat)
    if arrangement == "standard":
        flops["k_proj, v_proj (context)"] = depth * 2 * (2 * b * s * e * g * d)
        flops["k_proj, v_proj (latents)"] = sum(2 * (2 * bl * lat * e * g * d) for bl in b_lat)
        flops["scores q.k"] = depth * 2 * b * h * l * n * d  # every query head scores all n keys
        flops["weighted sum attn.v"] = depth * 2 * b * h * l * n * d
    else:
        flops["absorb k_proj into q"] = sum(2 * bl * h * l * d * e for bl in b_lat)
        n_mult = padded_keys(n) if padded else n
        flops["scores q.k"] = depth * 2 * b * h * l * n_mult * e
        flops["weighted sum attn.v"] = depth * 2 * b * h * l * n_mult * e
        flops["v_proj after the sum"] = depth * 2 * b * h * l * e * d
    flops["output_proj"] = depth * 2 * b * l * h * d * e
    flops[mlp_step(config)] = depth * len(mlp_matrices(config)) * (2 * b * l * e * config.mlp_dim)
    return flops


# The formula behind each entry of `step_flops`, per layer (times depth), for the chapter's table:
# IDEFICS' seams (g = h k/v heads, a two-matrix MLP). `step_formulas` gives them for any config.
STEP_FORMULAS = {
    "standard": {
        "q_proj": "2 b l e h d",
        "k_proj, v_proj (context)": "2 * 2 b s e h d",
        "k_proj, v_proj (latents)": "2 * 2 b l e h d",
        "scores q.k": "2 b h l n d",
        "weighted sum attn.v": "2 b h l n d",
        "output_proj": "2 b l h d e",
        "mlp (fc, c_proj)": "2 * 2 b l e 4e",
    },
    "absorbed": {
        "q_proj": "2 b l e h d",
        "absorb k_proj into q": "2 b h l d e",
        "scores q.k": "2 b h l n e",
        "weighted sum attn.v": "2 b h l n e",
        "v_proj after the sum": "2 b h l e d",
        "output_proj": "2 b l h d e",
        "mlp (fc, c_proj)": "2 * 2 b l e 4e",
    },
}


def step_formulas(config: ResamplerConfig, arrangement: str = "standard") -> dict[str, str]:
    """STEP_FORMULAS for this config: g k/v heads in the k/v rows when they are fewer than h, the MLP's matrices."""
    table = {k: v for k, v in STEP_FORMULAS[arrangement].items() if not k.startswith("mlp")}
    if config.kv_heads != config.n_heads:
        table = {k: v.replace("e h d", "e g d") if k.startswith("k_proj") else v for k, v in table.items()}
    table[mlp_step(config)] = f"{len(mlp_matrices(config))} * 2 b l e 4e"
    return table


def total_flops(
    config: ResamplerConfig,
    b: int,
    s: int,
    arrangement: str = "standard",
    cached_first_layer: bool = False,
    padded: bool = False,
) -> int:
    """All the matrix-product FLOPs of one forward pass (the sum of `step_flops`)."""
    return sum(step_flops(config, b, s, arrangement, cached_first_layer, padded).values())


def step_params(config: ResamplerConfig) -> dict[str, int]:
    """Parameters of each part, summed over the `depth` layers, by formula: {part: count}.

    The parts match `step_flops`, so that where the weights sit can be set beside where the FLOPs go
    (a weight matrix [f_out, f_in] holds f_out f_in numbers and costs 2 f_out f_in FLOPs per token).
    Their sum equals `sum(p.numel() for p in PerceiverResampler(config).parameters())`.
    """
    e, depth, h, d = config.embed_dim, config.depth, config.n_heads, config.head_dim
    per_norm = 2 if config.norm == "layer" else 1  # LayerNorm: a scale and a shift per feature; RMSNorm: a scale
    params = {
        "latents": config.n_latents * e,
        "norms (context, latents, MLP; final)": depth * 3 * per_norm * e + per_norm * e,
        "q_proj": depth * e * h * d,
        "k_proj, v_proj": depth * 2 * e * config.kv_dim,
        "output_proj": depth * h * d * e,
        "mlp": depth * (3 if config.mlp == "swiglu" else 2) * e * config.mlp_dim,  # SwiGLU: gate, up, down
    }
    if config.qk_norm:
        params["QK-norm (q and k, over d)"] = depth * 2 * per_norm * d
    if config.n_media_embeds or config.n_frame_embeds:
        params["media and frame embeddings"] = (config.n_media_embeds + config.n_frame_embeds) * e
    return params


def cheaper_arrangement(config: ResamplerConfig, b: int, s: int) -> str:
    """ "absorbed" when it needs fewer FLOPs than "standard" (never with QK-norm), else "standard"."""
    if config.qk_norm:
        return "standard"
    absorbed = total_flops(config, b, s, "absorbed", cached_first_layer=True)
    standard = total_flops(config, b, s, "standard", cached_first_layer=True)
    return "absorbed" if absorbed < standard else "standard"


def step_memory(config: ResamplerConfig, b: int, s: int, arrangement: str = "standard") -> dict[str, int]:
    """Numbers each step of one layer writes (multiply by 4 for bytes in float32): {step name: count}.

    The largest of these, alive together inside one layer, set the peak memory of a call; the
    context [b, s, e] and the weights come on top (they exist before the call).
    """
    e, h, d, l = config.embed_dim, config.n_heads, config.head_dim, config.n_latents
    n = n_keys(config, s)
    memory = {"context_layer_norm": b * s * e, "kv_input (joined)": b * n * e if config.latents_in_kv else 0}
    if arrangement == "standard":
        memory["k, v"] = 2 * b * n * config.kv_heads * d
    else:
        memory["absorbed queries"] = b * h * l * e
    memory["scores, attn"] = 2 * b * h * l * n
    memory["mlp hidden"] = b * l * config.mlp_dim * (2 if config.mlp == "swiglu" else 1)  # SwiGLU: gate and up
    return memory


def attention_entries(s: int, l: int, self_attention: bool = False) -> int:
    """Scores per head and example: l (s + l) for the resampler's latents, (s + l)^2 if every token asked."""
    n = s + l
    return n * n if self_attention else l * n


def self_attention_crossover(e: int, inner: int, mlp_dim: int) -> float:
    """n where a self-attention block's n^2 attention FLOPs (4 n^2 h d) reach its linear ones.

    Linear in n: q, k, v, output projections (8 n e h d) and the MLP (4 n e mlp_dim). Past this n
    the quadratic term dominates; the resampler, whose attention is l x n, never gets there.
    """
    return (8 * e * inner + 4 * e * mlp_dim) / (4 * inner)


def pixel_shuffle_tokens(grid: int, ratio: int) -> int:
    """Tokens left when each ratio x ratio block of a grid x grid patch grid is folded into one token."""
    if grid % ratio:
        raise ValueError(f"grid {grid} is not divisible by ratio {ratio}")
    return (grid // ratio) ** 2


# -- what the resampler saves the language model -------------------------------------------------
def tokens_per_image(context_length: int = 257, n_latents: int = 64, resampler: bool = True) -> int:
    """Visual tokens the language model reads per image: l after the resampler, else all s."""
    return n_latents if resampler else context_length


def lm_cross_attention_flops(
    n_text: int, n_visual: int, lm_dim: int, n_layers: int, visual_dim: int | None = None
) -> int:
    """Matrix-product FLOPs of the LM's gated cross-attention layers reading `n_visual` tokens.

    Per cross-attention layer: q from the text (2 t D D), k and v from the visual tokens
    (2 * 2 v E D, E = visual_dim, the width they arrive with), scores and weighted sum
    (2 * 2 t v D) and the output projection (2 t D D). The visual k/v and the t v terms grow with v.
    """
    t, v, big_d = n_text, n_visual, lm_dim
    e = visual_dim if visual_dim is not None else lm_dim
    per_layer = 2 * t * big_d * big_d + 2 * (2 * v * e * big_d) + 2 * (2 * t * v * big_d) + 2 * t * big_d * big_d
    return n_layers * per_layer
