"""The explorer's forward pass on CUDA equals the CPU's; the same path runs on the CPU everywhere.

benchmarks/gpu_check.py prints the same comparison with timings on a GPU machine.
"""

from __future__ import annotations

import pytest
import torch

import perceiver_edu as pe
from perceiver_edu.explorer.forward import run_forward

HAS_CUDA = torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")]),
]
CONFIGS = [
    (pe.ResamplerConfig(embed_dim=64, depth=2, n_heads=4, head_dim=16, n_latents=8), "image", 257),
    (pe.ResamplerConfig(embed_dim=64, depth=6, n_heads=8, head_dim=16, n_latents=16, qk_norm=True), "structured", 257),
    (
        pe.ResamplerConfig(embed_dim=64, depth=3, n_heads=4, head_dim=32, n_latents=8, latents_in_kv=False),
        "random",
        100,
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config, kind, s", CONFIGS)
def test_forward_on_device_matches_the_cpu(device, config, kind, s):
    reference = run_forward(config, input_kind=kind, context_length=s, seed=3, device="cpu")
    run = run_forward(config, input_kind=kind, context_length=s, seed=3, device=device)
    assert run.device == device and run.seconds > 0
    # the trace comes back to the CPU, ready to plot
    assert all(a.device.type == "cpu" for a in run.trace.attentions) and run.output.device.type == "cpu"
    for a, b in zip(reference.trace.attentions, run.trace.attentions):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4)
    torch.testing.assert_close(run.output, reference.output, rtol=0, atol=1e-4)
    for a in run.trace.attentions:
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_explorer_runs_and_redraws_on_device(device):
    explorer = pe.Explorer(device=device, weights="random", live=False)  # the PNG path counts its renders
    assert explorer.run.device == device and f"device {device}" in explorer.status.value
    for name, value in [("depth", 6), ("qk_norm", True), ("head", 3)]:
        renders = explorer.n_renders
        explorer.controls[name].value = value
        assert explorer.message == "" and explorer.n_renders == renders + 1
    assert explorer.run.device == device and explorer.trace.depth == 6 and explorer.run.config.qk_norm
    reference = run_forward(explorer.run.config, input_kind="image", context_length=257, seed=0, device="cpu")
    torch.testing.assert_close(explorer.trace.attentions[5], reference.trace.attentions[5], rtol=0, atol=1e-4)
