"""The resampler on a CUDA GPU gives what it gives on the CPU (skipped where there is no GPU)."""

import pytest
import torch

import perceiver_edu as pe


def run_on(device):
    torch.manual_seed(0)
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny(qk_norm=True)).to(device)
    context = pe.make_context("image", batch=2, context_length=257, embed_dim=32).to(device)
    with torch.no_grad():
        latents, trace = model(context, return_trace=True)
    assert latents.device.type == torch.device(device).type
    assert trace.attentions[0].device.type == torch.device(device).type
    return latents.cpu(), trace.attentions[-1].cpu()


def test_same_code_path_on_cpu():
    latents, attn = run_on("cpu")
    assert latents.shape == (2, 8, 32) and attn.shape == (2, 4, 8, 265)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_cuda_matches_cpu(exact_cuda_matmul):
    cpu_latents, cpu_attn = run_on("cpu")
    gpu_latents, gpu_attn = run_on("cuda")
    torch.testing.assert_close(gpu_latents, cpu_latents, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu_attn, cpu_attn, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="context is on cpu but the resampler is on cuda"):
        pe.PerceiverResampler(pe.ResamplerConfig.tiny()).cuda()(torch.randn(1, 3, 32))
