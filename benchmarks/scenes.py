"""The scenes model's figures on held-out scenes drawn from --seed, each against its target (below).

    python benchmarks/scenes.py --seed N [--n 1000] [--train]

Evaluates the shipped `pe.pretrained("scenes")` on `pe.held_out_scenes(n, seed=N)` (digits it never
trained on) and prints one line per figure: object accuracy (>= 95 %) with the exact-set accuracy,
object coverage (>= 90 %; each patch weighed by its pixels inside the box, then on its own line
the earlier measure that counts every patch the box touches), the fall of the mean context-attention
entropy from the same model at initialisation (>= 40 %), and the recorded training time (<= 5 min on one thread of the 2-core CPU,
counted as CPU time: on the shared machine the wall time also holds the waits for a core).
It then prints the same figures for the four QK-norm x latents-in-kv variants and for the shipped
model on a 48 x 48 canvas (more context tokens, the same latents).

--train retrains "scenes" now from its recipe (the `python -m perceiver_edu.train scenes` run),
prints its time, and checks that the weights equal the shipped file bit for bit (deterministic on
the CPU). Reference in the same run: the time per step of chapter 4's digits trainer, so that the
ratio says how much a scenes step costs whatever the load of the shared machine; the load average
is printed with each time.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

import torch

import perceiver_edu as pe
from perceiver_edu import scenes as S

# the module, not the function pe.pretrained that shadows it as an attribute of the package
P = importlib.import_module("perceiver_edu.pretrained")

TARGETS = dict(object_accuracy=95.0, object_coverage=90.0, entropy_fall=40.0, training_seconds=300.0)


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def figures(name: str, scenes: S.Scenes) -> dict[str, float]:
    """evaluate() of the trained model and the entropy fall from its initial weights, on `scenes`."""
    model, info = pe.pretrained(name), P.pretrained_info(name)
    trained = S.evaluate(model, scenes)
    initial = S.evaluate(S.init_scene_model(model.config, info["seed"], **info["model"]), scenes)
    trained["initial_context_entropy"] = initial["context_entropy"]
    trained["entropy_fall"] = 100.0 * (1 - trained["context_entropy"] / initial["context_entropy"])
    return trained


def verdict(value: float, target: float, above: bool = True) -> str:
    ok = value >= target if above else value <= target
    return f"(target {'>=' if above else '<='} {target:g}: {'met' if ok else 'NOT met'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="seed of the held-out scenes")
    parser.add_argument("--n", type=int, default=1000, help="how many held-out scenes")
    parser.add_argument("--train", action="store_true", help="also retrain 'scenes' and time it")
    args = parser.parse_args()
    torch.set_num_threads(1)

    scenes = pe.held_out_scenes(args.n, seed=args.seed)
    info = P.pretrained_info("scenes")
    f = figures("scenes", scenes)
    print(
        f"pe.pretrained('scenes') on pe.held_out_scenes({args.n}, seed={args.seed}): "
        f"{sum(len(y) for y in scenes.labels)} objects in {len(scenes)} scenes of 32 x 32"
    )
    print(f"object accuracy: {f['object_accuracy']:.1f} % {verdict(f['object_accuracy'], TARGETS['object_accuracy'])}")
    print(f"exact-set accuracy: {f['exact_set_accuracy']:.1f} %")
    print(
        f"object coverage (patches weighed by their pixels in the box): {f['object_coverage']:.1f} % "
        f"{verdict(f['object_coverage'], TARGETS['object_coverage'])}"
    )
    print(f"object coverage (any patch the box touches, the earlier measure): {f['object_coverage_touch']:.1f} %")
    print(f"median attention on its object (pixels in the box): {f['median_object_attention']:.1f} %")
    print(f"median attention on its object (patches the box touches): {f['median_object_attention_touch']:.1f} %")
    print(
        f"context entropy: {f['context_entropy']:.2f} nats, at initialisation {f['initial_context_entropy']:.2f} nats"
    )
    print(f"entropy fall: {f['entropy_fall']:.1f} % {verdict(f['entropy_fall'], TARGETS['entropy_fall'])}")
    # CPU time of the one training thread: what the run costs on a quiet core; the wall time also
    # counts the waits for a core that the shared machine's other processes held
    print(
        f"training time: {info['cpu_seconds']:.0f} s of CPU recorded for {info['steps']} steps on {info['threads']} thread "
        f"{verdict(info['cpu_seconds'], TARGETS['training_seconds'], above=False)}; wall {info['seconds']:.0f} s under the load then"
    )

    print("\nthe four trained variants, same held-out scenes:")
    print(
        f"{'name':<22} {'qk_norm':>7} {'in kv':>6} {'accuracy':>9} {'exact set':>9} {'coverage':>9} {'(touch)':>8} "
        f"{'entropy fall':>12}"
    )
    for name in P.PRETRAINED[1:]:
        v, config = figures(name, scenes), P.pretrained_info(name)["config"]
        print(
            f"{name:<22} {str(config['qk_norm']):>7} {str(config['latents_in_kv']):>6} {v['object_accuracy']:>8.1f}% "
            f"{v['exact_set_accuracy']:>8.1f}% {v['object_coverage']:>8.1f}% {v['object_coverage_touch']:>7.1f}% "
            f"{v['entropy_fall']:>11.1f}%"
        )

    big = pe.held_out_scenes(min(args.n, 300), seed=args.seed, canvas=48, max_objects=4)
    b = S.evaluate(pe.pretrained("scenes"), big)
    print(
        f"\nanother canvas, 48 x 48 (s = 144 instead of 64, the same 8 latents), {len(big)} scenes: "
        f"object accuracy {b['object_accuracy']:.1f} %, object coverage {b['object_coverage']:.1f} % "
        f"({b['object_coverage_touch']:.1f} % counting the patches the boxes touch)"
    )

    if args.train:
        print(f"\nretraining 'scenes' ({info['steps']} steps, seed {info['seed']}, 1 thread); before: {load()}")
        cpu = time.process_time()
        run = S.train_scenes(
            S.scenes_config(**P.RECIPES["scenes"]["config"]), steps=info["steps"], seed=info["seed"], progress=False
        )
        shipped = pe.pretrained("scenes").state_dict()
        same = all(torch.equal(v, shipped[k]) for k, v in run.model.state_dict().items())
        cpu = time.process_time() - cpu
        print(
            f"training time: {cpu:.1f} s of CPU, {run.seconds:.1f} s wall ({1000 * run.seconds / info['steps']:.1f} ms/step); {load()}"
        )
        print(f"same weights as the shipped file: {same}")
        start = time.perf_counter()
        pe.train_digits(steps=200, seed=1, progress=False, eval_every=200)
        reference = (time.perf_counter() - start) / 200
        print(
            f"reference: chapter 4's digits trainer, {1000 * reference:.1f} ms/step; "
            f"scenes step / digits step = {run.seconds / info['steps'] / reference:.1f}; {load()}"
        )


if __name__ == "__main__":
    main()
