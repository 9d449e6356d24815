"""Our forward pass against transformers' IdeficsPerceiverResampler at the IDEFICS-9B scale.

Same weights, same inputs, one process, the two interleaved (ours, theirs, ours, theirs, ...) so
that whatever else the machine is doing hits both alike. Prints the median time of each and the
median of the per-pair ratios ours / transformers (target: <= 1.05 with the trace off).

    python benchmarks/forward.py [--repeats 30] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import IdeficsConfig
from transformers.models.idefics.perceiver import IdeficsPerceiverResampler

import perceiver_edu as pe


def timed(fn, sync):
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    cfg = pe.ResamplerConfig.idefics()
    hf_config = IdeficsConfig(
        vision_config=dict(embed_dim=cfg.embed_dim), perceiver_config=dict(qk_layer_norms_perceiver=False)
    )
    torch.manual_seed(0)
    theirs = IdeficsPerceiverResampler(hf_config, cfg.embed_dim, cfg.depth, cfg.n_heads, cfg.head_dim, cfg.n_latents)
    theirs = theirs.eval().to(args.device)
    ours = pe.interop.from_idefics(theirs).eval()
    print(
        f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"config {cfg}, {args.repeats} interleaved repeats"
    )

    for batch in args.batches:
        context = torch.randn(batch, 257, cfg.embed_dim, device=args.device)
        with torch.inference_mode():
            assert torch.allclose(ours(context), theirs(context), atol=1e-4)
            runs = {
                "ours": lambda: ours(context),
                "ours+trace": lambda: ours(context, return_trace=True),
                "transformers": lambda: theirs(context),
            }
            for fn in runs.values():  # warm-up
                for _ in range(3):
                    fn()
            sync()
            times = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    times[name].append(timed(fn, sync))
        ref = times["transformers"]
        print(f"\nb={batch}, s=257")
        for name, values in times.items():
            ratio = statistics.median(a / b for a, b in zip(values, ref))
            print(f"  {name:13s} median {1e3 * statistics.median(values):8.2f} ms   ratio to transformers {ratio:5.3f}")


if __name__ == "__main__":
    main()
