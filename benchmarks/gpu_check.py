"""The explorer's forward pass on CUDA: does it give the CPU's numbers, and how long does it take?

    python benchmarks/gpu_check.py

Runs `perceiver_edu.explorer.forward.run_forward` (what the explorer runs on every architecture change)
on the GPU and on the CPU with the same seeded weights and context, prints the largest
difference of the attention maps and outputs and the forward times, then FastResampler against
the step model on CUDA at the IDEFICS-9B shape (time, float32 difference, float16 / bfloat16
error against float32), then drives a whole `Explorer(device="cuda")` through a few changes. Without CUDA it prints "skipped: no CUDA" and
exits 0; tests/test_gpu.py runs the same path on the CPU in CI.
"""

from __future__ import annotations

import statistics
import sys

import torch

import perceiver_edu as pe
from perceiver_edu.explorer.forward import run_forward

# the explorer's default, a deep QK-norm model, plain cross-attention, and the IDEFICS-9B shape
SETTINGS = [
    ("explorer default", dict(embed_dim=64, depth=2, n_heads=4, head_dim=16, n_latents=8), "image", 257),
    (
        "depth 6, QK-norm",
        dict(embed_dim=64, depth=6, n_heads=8, head_dim=16, n_latents=16, qk_norm=True),
        "structured",
        257,
    ),
    (
        "latents not in kv",
        dict(embed_dim=64, depth=3, n_heads=4, head_dim=32, n_latents=8, latents_in_kv=False),
        "random",
        100,
    ),
    ("IDEFICS-9B shape", dict(embed_dim=1280, depth=6, n_heads=16, head_dim=96, n_latents=64), "image", 257),
]
TOLERANCE = 1e-4  # float32 on two kinds of hardware: same maths, different summation order


def compare(config: pe.ResamplerConfig, input_kind: str, context_length: int, device: str, repeats: int = 5) -> dict:
    """Run on the CPU and on `device`; the largest differences and the median forward times."""
    cpu = [
        run_forward(config, input_kind=input_kind, context_length=context_length, device="cpu") for _ in range(repeats)
    ]
    dev = [
        run_forward(config, input_kind=input_kind, context_length=context_length, device=device) for _ in range(repeats)
    ]
    a, b = cpu[0], dev[0]
    attn = max(float((x - y).abs().max()) for x, y in zip(a.trace.attentions, b.trace.attentions))
    return dict(
        device=b.device,
        attention=attn,
        output=float((a.output - b.output).abs().max()),
        cpu_ms=statistics.median(r.seconds for r in cpu) * 1e3,
        device_ms=statistics.median(r.seconds for r in dev[1:]) * 1e3,  # the first pays for CUDA's start
    )


def drive_explorer(device: str) -> list[str]:
    """The whole widget on the device: a few changes, each must run there and redraw."""
    problems = []
    explorer = pe.Explorer(device=device, live=False)  # the PNG path counts its renders
    for name, value in [("depth", 6), ("qk_norm", True), ("n_heads", 8), ("head", 5), ("layer", 4)]:
        renders = explorer.n_renders
        explorer.controls[name].value = value
        if explorer.message or explorer.n_renders != renders + 1 or not explorer.run.device.startswith("cuda"):
            problems.append(f"{name}={value}: message {explorer.message!r}, device {explorer.run.device}")
    return problems


def fast_path_on(device: str, repeats: int = 11, config: pe.ResamplerConfig | None = None, s: int = 257) -> dict:
    """FastResampler against the step model at the IDEFICS-9B shape (b=1, s=257) on `device`.

    float32 with TF32 off (TF32 rounds products to 10 bits of mantissa), then float16 and bfloat16
    against float32: what half precision costs. Times are medians of interleaved rounds.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.manual_seed(0)
    config = config or pe.ResamplerConfig.idefics()
    model = pe.PerceiverResampler(config).eval().to(device)
    fast = pe.FastResampler(model)
    context = torch.randn(1, s, config.embed_dim, device=device)
    with torch.no_grad():
        diff = float((fast(context) - model(context)).abs().max())
        times = pe.measure.time_interleaved(
            {"step": lambda: model(context), "fast": lambda: fast(context)}, repeats, sync
        )
        errors = pe.fast.precision_errors(model, context)
    return dict(
        diff=diff,
        step_ms=1e3 * statistics.median(times["step"]),
        fast_ms=1e3 * statistics.median(times["fast"]),
        ratio=pe.measure.median_ratio(times, "fast", "step"),
        errors=errors,
    )


def main() -> int:
    if not torch.cuda.is_available():
        print("skipped: no CUDA")
        return 0
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    failed = False
    print(f"{'setting':20s} {'max |attn diff|':>16s} {'max |out diff|':>15s} {'cpu ms':>8s} {'cuda ms':>8s}")
    for label, sizes, kind, s in SETTINGS:
        r = compare(pe.ResamplerConfig(**sizes), kind, s, "cuda")
        ok = r["attention"] <= TOLERANCE and r["output"] <= TOLERANCE
        failed |= not ok
        print(
            f"{label:20s} {r['attention']:16.2e} {r['output']:15.2e} {r['cpu_ms']:8.2f} {r['device_ms']:8.2f}"
            f"  {'ok' if ok else 'DIFFERENT'}"
        )
    r = fast_path_on("cuda")
    print(
        f"FastResampler, IDEFICS-9B shape, b=1, s=257, cuda: max |fast - step| {r['diff']:.1e} (float32, TF32 off), "
        f"step {r['step_ms']:.2f} ms, fast {r['fast_ms']:.2f} ms, fast / step {r['ratio']:.2f}"
    )
    print(
        "  float16 / bfloat16, max |error| against float32:", ", ".join(f"{k} {v:.1e}" for k, v in r["errors"].items())
    )
    failed |= r["diff"] > TOLERANCE
    problems = drive_explorer("cuda")
    print("Explorer(device='cuda'):", "ok" if not problems else problems)
    failed |= bool(problems)
    print("result:", "FAILED" if failed else f"cuda matches cpu within {TOLERANCE}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
