"""The shipped tiny Flamingo's captions of held-out scenes drawn from --seed (targets from issue 21).

    python benchmarks/tiny_flamingo.py --seed N [--n 1000] [--feeds]

Captions `pe.held_out_scenes(n, seed=N)` (digits it never trained on) greedily with the shipped
`pe.pretrained("tiny-flamingo")` and prints one line each: word accuracy (>= 90 %), exact caption
(>= 75 %), the same two for the frozen LM alone with the gates shut (chance: it never sees the
image), the gates' tanh(alpha) per gated layer, and the recorded training time (<= 5 min of CPU on
one thread; CPU time, since on the shared machine the wall time also holds the waits for a core).

--feeds trains the three ways to feed the LM (resampler latents, all patches, latents as tokens) on
the same budget, and the resampler feed on left-to-right captions (its own LM pretrained on that
order), and writes their figures and FLOPs per caption to
perceiver_edu/weights/tiny-flamingo-feeds.json, which chapter 7 reads.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time

import torch

import perceiver_edu as pe
from perceiver_edu import flamingo as fl

# the module, not the function pe.pretrained that shadows it as an attribute of the package
P = importlib.import_module("perceiver_edu.pretrained")

TARGETS = dict(word_accuracy=90.0, exact_caption=75.0, training_seconds=300.0)


def verdict(value: float, target: float, above: bool = True) -> str:
    ok = value >= target if above else value <= target
    return f"(target {'>=' if above else '<='} {target:g}: {'met' if ok else 'NOT met'})"


def feeds(steps: int, seed: int) -> dict:
    """Train each feed on the same recipe and budget; their held-out figures, FLOPs and CPU seconds."""
    recipe = P.RECIPES["tiny-flamingo"]
    lm = pe.pretrained("tiny-lm")
    vision = fl.VisionEncoder.from_scene_model(pe.pretrained("scenes"))
    scenes = pe.held_out_scenes(1000, seed=seed)
    out = {}
    for feed in fl.FEEDS:
        start = time.process_time()
        model = fl.build_flamingo(lm, vision, feed=feed, seed=recipe["seed"], **recipe["model"])
        fl.train_flamingo(model, steps=steps, progress=False, eval_every=steps, **recipe["training"])
        figures = fl.evaluate_captions(model, scenes)
        out[feed] = dict(
            figures, **fl.image_flops(model), cpu_seconds=round(time.process_time() - start, 1), gates=model.gates()
        )
        print(feed, {k: (round(v) if isinstance(v, float) else v) for k, v in out[feed].items()}, flush=True)
    # the same recipe with left-to-right captions: an LM pretrained on that order, then the resampler feed
    start = time.process_time()
    order = "left-to-right"
    lm_ltr = fl.pretrain_lm(
        fl.LMConfig(**P.RECIPES["tiny-lm"]["config"]),
        steps=P.RECIPES["tiny-lm"]["steps"],
        order=order,
        seed=P.RECIPES["tiny-lm"]["seed"],
        progress=False,
        **P.RECIPES["tiny-lm"]["training"],
    ).model
    model = fl.build_flamingo(lm_ltr, vision, seed=recipe["seed"], **recipe["model"])
    fl.train_flamingo(model, steps=steps, progress=False, eval_every=steps, order=order, **recipe["training"])
    left = dict(fl.evaluate_captions(model, scenes, order), cpu_seconds=round(time.process_time() - start, 1))
    left["lm_alone"] = fl.caption_scores(fl.generate(lm_ltr, None, n=len(scenes)), fl.captions(scenes, order))
    print(order, left, flush=True)
    return dict(steps=steps, scenes=f"held_out_scenes(1000, seed={seed})", feeds=out, left_to_right=left)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="seed of the held-out scenes")
    parser.add_argument("--n", type=int, default=1000, help="how many held-out scenes")
    parser.add_argument("--feeds", action="store_true", help="train the three feeds and write their JSON")
    parser.add_argument("--feed-steps", type=int, default=1000, help="steps of each feed's run")
    args = parser.parse_args()
    torch.set_num_threads(1)

    scenes = pe.held_out_scenes(args.n, seed=args.seed)
    targets = fl.captions(scenes)
    model, info = pe.pretrained("tiny-flamingo"), P.pretrained_info("tiny-flamingo")
    print(f"pe.pretrained('tiny-flamingo') on pe.held_out_scenes({args.n}, seed={args.seed}): {len(scenes)} scenes")
    print(f"(trained on fresh scenes of training digits from seed {info['seed']}; held-out digits never seen)")
    f = fl.evaluate_captions(model, scenes)
    print(f"word accuracy: {f['word_accuracy']:.1f} % {verdict(f['word_accuracy'], TARGETS['word_accuracy'])}")
    print(f"exact caption: {f['exact_caption']:.1f} % {verdict(f['exact_caption'], TARGETS['exact_caption'])}")
    alone = fl.caption_scores(fl.generate(model.lm, None, n=len(scenes)), targets)
    print(f"frozen LM alone, gates shut: word accuracy {alone['word_accuracy']:.1f} %")
    print(f"frozen LM alone, gates shut: exact caption {alone['exact_caption']:.1f} %")
    gates = model.gates()
    for i, layer in enumerate(model.cross_layers):
        print(
            f"gate before LM layer {layer}: tanh(alpha) attention {gates['attn'][i]:+.3f}, feed-forward {gates['ff'][i]:+.3f}"
        )
    cpu = info["cpu_seconds"]
    print(
        f"training time: {cpu:.0f} s of CPU on {info['threads']} thread ({info['steps']} steps; LM pretraining "
        f"{P.pretrained_info('tiny-lm')['cpu_seconds']:.0f} s more) {verdict(cpu, TARGETS['training_seconds'], above=False)}"
    )
    print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.feeds:
        result = feeds(args.feed_steps, args.seed)
        path = P.WEIGHTS / "tiny-flamingo-feeds.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
