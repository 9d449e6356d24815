"""What several test modules share: builders (as fixtures), the parity sizes, markers, restored global flags.

No test module imports another: a module-level skip in one would silently skip the other.

Markers (pyproject.toml): `notebooks` (nbval items, given here), `browser`, `slow`, `gpu`. The fast
loop for developers:  python -m pytest -m "not notebooks and not browser and not slow"
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import pytest
import torch

import perceiver_edu as pe

matplotlib.use("Agg")  # tests draw figures without a screen


@dataclass(frozen=True)
class ParitySizes:
    """The sizes the parity tests sweep (IDEFICS against transformers; the fast path against the step model)."""

    embed_dim: int = 48
    head_layouts: tuple = ((1, 64), (4, 16), (8, 12), (16, 4))  # (n_heads, head_dim); h * d need not equal e
    context_lengths: tuple = (0, 1, 2, 17, 64, 257)


PARITY = ParitySizes()


@pytest.fixture
def sizes() -> ParitySizes:
    return PARITY


def perturbed_model(config: pe.ResamplerConfig, seed: int = 0) -> pe.PerceiverResampler:
    """A model whose LayerNorms are not (1, 0), so a mis-folded or swapped scale or shift would show."""
    torch.manual_seed(seed)
    model = pe.PerceiverResampler(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln." in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture
def perturbed():
    """perturbed_model(config, seed=0) -> a PerceiverResampler with perturbed LayerNorms."""
    return perturbed_model


@pytest.fixture
def hf_idefics_resampler():
    """A builder of transformers' IdeficsPerceiverResampler from an IdeficsConfig (nothing downloaded),
    its LayerNorms perturbed. Skips only the test that asks for it when transformers is absent."""
    idefics = pytest.importorskip("transformers.models.idefics.perceiver")
    from transformers import IdeficsConfig

    def build(depth, n_heads, head_dim, n_latents, qk_norm, embed_dim=PARITY.embed_dim, seed=0):
        config = IdeficsConfig(
            vision_config=dict(embed_dim=embed_dim),
            perceiver_config=dict(qk_layer_norms_perceiver=qk_norm),
        )
        torch.manual_seed(seed)
        module = idefics.IdeficsPerceiverResampler(config, embed_dim, depth, n_heads, head_dim, n_latents).eval()
        with torch.no_grad():  # LayerNorms start at (1, 0): perturb them so a swapped weight would show
            for name, p in module.named_parameters():
                if "norm" in name or name.endswith("ln.weight") or name.endswith("ln.bias"):
                    p.add_(0.1 * torch.randn_like(p))
        return module

    return build


@pytest.fixture
def exact_cuda_matmul():
    """TF32 off for the test (CUDA matmuls then round as float32 does), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def pytest_collection_modifyitems(config, items):
    # nbval's items (one per notebook cell) come from .ipynb files: mark them so `-m "not notebooks"` skips them
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebooks)
