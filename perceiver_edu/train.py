"""Remake the shipped weights: `python -m perceiver_edu.train NAME` (or `all`).

Trains NAME from its recipe in pretrained.RECIPES on the CPU, deterministically on one thread,
and writes NAME.safetensors and NAME.json into perceiver_edu/weights/ (or --out DIR). The same
command on any machine gives the same weights, which is what the slow test checks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from . import flamingo
from .pretrained import PRETRAINED, RECIPES, WEIGHTS, check_name
from .scenes import evaluate, held_out_scenes, scenes_config, train_scenes
from .toy import default_config, train_digits

HELD_OUT = dict(n=1000, seed=0)  # the held-out scenes the figures in NAME.json are measured on
SCENES = f"held_out_scenes(n={HELD_OUT['n']}, seed={HELD_OUT['seed']})"


def train(name: str, out: str | Path = WEIGHTS, steps: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train `name` from its recipe (steps: override the recipe's, for a quick try); write the two files; return the JSON."""
    recipe = RECIPES[check_name(name)]
    steps = recipe["steps"] if steps is None else steps
    cpu_start = time.process_time()  # CPU time of this process: what the run costs, whatever the machine's load
    if recipe["task"] in ("tiny-lm", "tiny-flamingo"):
        result, info = train_tiny(recipe, steps, progress)
        cpu_seconds = time.process_time() - cpu_start
    elif recipe["task"] == "digits":
        config = default_config(**recipe["config"])
        result = train_digits(config, steps=steps, seed=recipe["seed"], progress=progress)
        cpu_seconds = time.process_time() - cpu_start
        info: dict[str, Any] = dict(
            task="digits", config=config.to_dict(), model={}, held_out=dict(accuracy=result.accuracy)
        )
    else:
        config = scenes_config(**recipe["config"])
        result = train_scenes(config, steps=steps, seed=recipe["seed"], progress=progress)
        cpu_seconds = time.process_time() - cpu_start
        scenes = held_out_scenes(**HELD_OUT)
        figures = evaluate(result.model, scenes)
        figures["initial_context_entropy"] = evaluate(result.initial_model(), scenes)["context_entropy"]
        spec = result.model.spec()
        info = dict(
            task="scenes",
            config=spec.pop("config"),
            model=spec,
            held_out=dict(figures, scenes=f"held_out_scenes(n={HELD_OUT['n']}, seed={HELD_OUT['seed']})"),
        )
    info.update(
        name=name,
        seed=recipe["seed"],
        steps=steps,
        seconds=round(result.seconds, 1),
        cpu_seconds=round(cpu_seconds, 1),
        threads=1,
        history=result.history,
        first_losses=getattr(result, "first_losses", []),
        command=f"python -m perceiver_edu.train {name}" + ("" if steps == recipe["steps"] else f" --steps {steps}"),
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, out / f"{name}.safetensors")
    (out / f"{name}.json").write_text(json.dumps(info, indent=1) + "\n")
    (out / f"{name}.safetensors").chmod(0o644)  # readable by all, like the rest of an installed package
    return info


def train_tiny(recipe: dict[str, Any], steps: int, progress: bool) -> tuple[Any, dict[str, Any]]:
    """Chapter 7's two models: the LM on captions alone, or the tiny Flamingo around the shipped "tiny-lm"."""
    scenes = held_out_scenes(**HELD_OUT)
    targets = flamingo.captions(scenes)
    if recipe["task"] == "tiny-lm":
        config = flamingo.LMConfig(**recipe["config"])
        result = flamingo.pretrain_lm(config, steps=steps, seed=recipe["seed"], progress=progress, **recipe["training"])
        alone = flamingo.caption_scores(flamingo.generate(result.model, None, n=len(scenes)), targets)
        return result, dict(task="tiny-lm", config=config.to_dict(), held_out=dict(alone, scenes=SCENES))
    from .pretrained import pretrained

    model = flamingo.build_flamingo(pretrained("tiny-lm"), seed=recipe["seed"], **recipe["model"])
    result = flamingo.train_flamingo(model, steps=steps, seed=recipe["seed"], progress=progress, **recipe["training"])
    figures = flamingo.evaluate_captions(model, scenes)
    alone = flamingo.caption_scores(flamingo.generate(model.lm, None, n=len(scenes)), targets)
    figures.update({f"lm_alone_{k}": v for k, v in alone.items()}, gates=model.gates(), scenes=SCENES)
    return result, dict(task="tiny-flamingo", model=model.spec(), held_out=figures)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m perceiver_edu.train", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=[*PRETRAINED, "all"], help="which model to remake")
    parser.add_argument(
        "--out", default=str(WEIGHTS), help="folder to write NAME.safetensors and NAME.json (default: the package's)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="train for this many steps instead of the recipe's (a quick try)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in PRETRAINED if args.name == "all" else [args.name]:
        info = train(name, args.out, args.steps, progress=not args.quiet)
        figures = ", ".join(f"{k} {v:.1f}" for k, v in info["held_out"].items() if isinstance(v, float))
        print(
            f"{name}: {info['steps']} steps in {info['seconds']:.0f} s ({info['cpu_seconds']:.0f} s of CPU); held out: {figures}"
        )


if __name__ == "__main__":
    main()
