"""Chapter 4's training run: held-out accuracy and wall-clock time, on the CPU (target: >= 96% in <= 60 s, 2 cores).

    python benchmarks/digits_training.py [--steps 1000] [--seed 1] [--qk-norm] [--device cpu|cuda]

Trains `pe.train_digits` exactly as notebooks/04_what_latents_learn.ipynb does (one CPU thread)
and prints its accuracy and time. Reference in the same run: a short run with torch's default
thread count (every core), timed per step, so the ratio says what the one-thread choice gains or
costs on this machine. The load average is printed with each figure, because on a shared machine
it moves the times more than anything in the code.
"""

from __future__ import annotations

import argparse
import os

import torch

import perceiver_edu as pe
from perceiver_edu import ResamplerConfig


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--qk-norm", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference-steps", type=int, default=200, help="steps of the all-cores reference run")
    args = parser.parse_args()

    cfg = ResamplerConfig.tiny(qk_norm=args.qk_norm)
    data = pe.load_digits_split()
    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {cfg}")
    print(f"before: {load()}")
    run = pe.train_digits(cfg, steps=args.steps, seed=args.seed, device=args.device, data=data, progress=False)
    print(
        f"chapter 4 run ({args.steps} steps, seed {args.seed}, 1 thread, {run.device}): "
        f"held-out accuracy {run.accuracy:.1f}%, {run.seconds:.1f} s ({1000 * run.seconds / args.steps:.1f} ms/step); "
        f"{load()}"
    )
    if args.device != "cpu":
        return
    cores = os.cpu_count() or 1
    reference = pe.train_digits(
        cfg, steps=args.reference_steps, seed=args.seed, data=data, progress=False, threads=cores
    )
    per_step = 1000 * reference.seconds / args.reference_steps
    print(
        f"reference ({args.reference_steps} steps, {cores} threads): {per_step:.1f} ms/step; "
        f"1 thread / {cores} threads time per step = {(run.seconds / args.steps) / (reference.seconds / args.reference_steps):.2f}; "
        f"{load()}"
    )


if __name__ == "__main__":
    main()
