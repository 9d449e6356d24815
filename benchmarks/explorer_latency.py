"""How long the PNG explorer (`Explorer(live=False)`) takes from a value change to the new figure.

The live explorer draws in the browser instead: benchmarks/view_latency.py times both in JupyterLab.

    python benchmarks/explorer_latency.py [--rounds 5]

Sets widget values from Python, the way the browser's comm message does in the kernel, and times
each assignment until it returns: by then the model has run (when the change needs it), the
figure is drawn and its PNG is on the Image widget (`n_renders` is checked to have moved). The
trip to the browser and its decoding of the PNG are not included.
Two walks of changes: from the trained default (weights, scene, the trained variants) and from
random weights on the photo (every architecture control). Each is reported on its own.
Target (2 CPU cores): median <= 100 ms, 95th percentile <= 250 ms, for each walk.

Reference in the same run: the naive way to show the same figure, a fresh
`viz.plot_attention_map` figure saved with `savefig` (what a notebook cell does), plus the forward
pass for the changes that need one. The ratio says what the explorer's figure reuse saves.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import statistics
import time

import torch

import perceiver_edu as pe
from perceiver_edu import viz
from perceiver_edu.explorer import forward, render

# (control, value) pairs that walk away from the default and back, so every change starts from
# (nearly) the default configuration. View changes first, then each architecture control.
# Two walks: random weights on the photo (every architecture control), and the trained default
# (the weights, the scene and the switches between trained variants).
RANDOM_WALK = [
    ("head", 1),
    ("head", 2),
    ("head", 3),
    ("head", 0),
    ("layer", 1),
    ("layer", 0),
    ("seed", "new"),
    ("seed", 0),  # "new": a seed not seen before, so its context is not cached
    ("qk_norm", True),
    ("qk_norm", False),
    ("head_dim", 32),
    ("head_dim", 16),
    ("n_heads", 8),
    ("n_heads", 4),
    ("depth", 3),
    ("depth", 2),
    ("n_latents", 16),
    ("n_latents", 8),
    ("latents_in_kv", False),
    ("latents_in_kv", True),
    ("input_kind", "structured"),
    ("input_kind", "image"),
    ("context_length", 145),
    ("context_length", 257),
]
TRAINED_WALK = [
    ("head", 1),
    ("head", 2),
    ("head", 3),
    ("head", 0),
    ("layer", 1),
    ("layer", 0),
    ("scene", "next"),
    ("scene", "next"),  # "next": the next held-out scene, as the button does
    ("qk_norm", True),
    ("qk_norm", False),  # the trained variants
    ("latents_in_kv", False),
    ("latents_in_kv", True),
    ("weights", "random"),
    ("weights", "scenes"),
]
VIEW = {"head", "layer"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def naive_update(explorer: pe.Explorer, name: str) -> None:
    """The reference: what a cell re-run does, a new model run (when needed) and a fresh figure."""
    run = explorer.run
    if name not in VIEW:
        run = forward.run_forward(
            run.config,
            input_kind=run.input_kind,
            context_length=run.context_length,
            seed=run.seed,
            device=run.device,
            weights=run.weights,
            scene=run.scene_index or 0,
        )
    layer, head = explorer.controls["layer"].value, explorer.controls["head"].value
    fig = viz.plot_attention_map(run.trace.attentions[layer][0, head], run.trace.context_length)
    fig.savefig(io.BytesIO(), format="png", dpi=render.DPI)


def walk(explorer: pe.Explorer, changes: list, rounds: int, fresh) -> tuple[dict, dict]:
    """Time each change of `changes`, `rounds` times over, and the naive reference after it."""
    times: dict[str, list[float]] = {}
    reference: dict[str, list[float]] = {}

    def value_of(name, value):
        if value == "new":
            return next(fresh)
        if value == "next":
            return (explorer.controls[name].value + 1) % forward.N_SCENES
        return value

    for name, value in changes:  # warm-up: fonts, caches, first layouts, trained files
        explorer.controls[name].value = value_of(name, value)
    for _ in range(rounds):
        for name, value in changes:
            value = value_of(name, value)
            renders = explorer.n_renders
            start = time.perf_counter()
            explorer.controls[name].value = value
            elapsed = time.perf_counter() - start
            if explorer.n_renders != renders + 1 or explorer.message:
                raise SystemExit(f"{name}={value!r} did not replace the figure once: {explorer.message}")
            times.setdefault(name, []).append(elapsed)
            start = time.perf_counter()
            naive_update(explorer, name)
            reference.setdefault(name, []).append(time.perf_counter() - start)
    return times, reference


def report(title: str, times: dict, reference: dict) -> tuple[float, float]:
    everything = [t for ts in times.values() for t in ts]
    naive = [t for ts in reference.values() for t in ts]
    print(f"\n{title}")
    print(f"{'change':16s} {'n':>3s} {'median ms':>10s} {'p95 ms':>8s} {'naive median ms':>16s} {'ratio':>6s}")
    for name in times:
        med, ref = statistics.median(times[name]), statistics.median(reference[name])
        print(
            f"{name:16s} {len(times[name]):3d} {med * 1e3:10.1f} {percentile(times[name], 95) * 1e3:8.1f} "
            f"{ref * 1e3:16.1f} {med / ref:6.2f}"
        )
    med, p95 = statistics.median(everything), percentile(everything, 95)
    view = [t for n, ts in times.items() if n in VIEW for t in ts]
    other = [t for n, ts in times.items() if n not in VIEW for t in ts]
    print(
        f"all changes     n={len(everything)}  median {med * 1e3:.1f} ms  p95 {p95 * 1e3:.1f} ms  "
        f"(target: median <= 100 ms, p95 <= 250 ms)"
    )
    print(
        f"view changes    median {statistics.median(view) * 1e3:.1f} ms   "
        f"run changes median {statistics.median(other) * 1e3:.1f} ms"
    )
    print(
        f"naive reference median {statistics.median(naive) * 1e3:.1f} ms; explorer / naive = "
        f"{med / statistics.median(naive):.2f}"
    )
    return med, p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="how many times to walk through the changes")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {cores} CPU cores, torch threads {torch.get_num_threads()}, "
        f"load average {load:.1f} (other work on the machine slows every figure)"
    )

    fresh = itertools.count(1000)
    results = []
    for title, explorer, changes in (
        ("trained default (weights 'scenes' on held-out scenes)", pe.Explorer(live=False), TRAINED_WALK),
        (
            "random weights on the photo (every architecture control)",
            pe.Explorer(live=False, weights="random"),
            RANDOM_WALK,
        ),
    ):
        print(f"\n{title}: starts at {explorer.describe()}")
        results.append(report(title, *walk(explorer, changes, args.rounds, fresh)))
    ok = all(med <= 0.100 and p95 <= 0.250 for med, p95 in results)
    print("\nverdict:", "meets the target" if ok else "MISSES the target on this machine now")


if __name__ == "__main__":
    main()
