"""Remake the shipped weights: `python -m perceiver_edu.train NAME` (or `all`).

Trains NAME from its recipe in pretrained.RECIPES on the CPU, deterministically on one thread,
and writes NAME.safetensors and NAME.json into perceiver_edu/weights/ (or --out DIR).

What a remake promises (tests/test_pretrained.py checks each):
- on one machine, the same command gives the same weights, bit for bit;
- on another machine, the weights differ in the last bits (CPUs with other vector units, AVX2,
  AVX-512 or NEON, round float sums differently, and training grows the difference), but the loss
  of each of the first steps matches the JSON's `first_losses` to float32 rounding, and the
  remade model reaches the shipped model's held-out figures within a few points.

`--log-first` only re-runs a recipe's first steps and writes their losses into the existing JSON
(how the logs of models shipped before the log existed were added; the JSON says on which CPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .config import ResamplerConfig
from .digits import train_digits
from .pretrained import PRETRAINED, RECIPES, WEIGHTS, check_name
from .scenes import evaluate, held_out_scenes, scenes_config, train_scenes
from .training import FIRST_STEPS, TrainResult

HELD_OUT = dict(n=1000, seed=0)  # the held-out scenes the figures in NAME.json are measured on


def run_recipe(
    name: str, steps: int | None = None, progress: bool = True, stop_after: int | None = None
) -> TrainResult:
    """Train `name` from its recipe (steps: override the recipe's; stop_after: only the first steps, see training.train)."""
    recipe = RECIPES[check_name(name)]
    steps = recipe["steps"] if steps is None else steps
    trainer = train_digits if recipe["task"] == "digits" else train_scenes
    config = (ResamplerConfig.tiny if recipe["task"] == "digits" else scenes_config)(**recipe["config"])
    return trainer(config, steps=steps, seed=recipe["seed"], progress=progress, stop_after=stop_after)


def first_losses(name: str, n: int = FIRST_STEPS) -> list[float]:
    """The loss of each of the first n steps of `name`'s recipe, on this machine."""
    return run_recipe(name, progress=False, stop_after=n).first_losses


def log_first(name: str, out: str | Path = WEIGHTS) -> list[float]:
    """Write `first_losses(name)` and this CPU's vector unit into NAME.json in `out`; the weights stay as they are."""
    path = Path(out) / f"{check_name(name)}.json"
    info = json.loads(path.read_text())
    info["first_losses"] = first_losses(name)
    info["first_losses_cpu"] = torch.backends.cpu.get_cpu_capability()
    path.write_text(json.dumps(info, indent=1) + "\n")
    return info["first_losses"]


def train(name: str, out: str | Path = WEIGHTS, steps: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train `name` from its recipe (steps: override the recipe's, for a quick try); write the two files; return the JSON."""
    recipe = RECIPES[check_name(name)]
    steps = recipe["steps"] if steps is None else steps
    cpu_start = time.process_time()  # CPU time of this process: what the run costs, whatever the machine's load
    result = run_recipe(name, steps, progress)
    cpu_seconds = time.process_time() - cpu_start
    if recipe["task"] == "digits":
        config = result.model.config
        info: dict[str, Any] = dict(
            task="digits", config=config.to_dict(), model={}, held_out=dict(accuracy=result.accuracy)
        )
    else:
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
        first_losses=result.first_losses,
        first_losses_cpu=torch.backends.cpu.get_cpu_capability(),
        command=f"python -m perceiver_edu.train {name}" + ("" if steps == recipe["steps"] else f" --steps {steps}"),
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, out / f"{name}.safetensors")
    (out / f"{name}.json").write_text(json.dumps(info, indent=1) + "\n")
    (out / f"{name}.safetensors").chmod(0o644)  # readable by all, like the rest of an installed package
    return info


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
    parser.add_argument(
        "--log-first", action="store_true", help="only re-run the first steps and write their losses into NAME.json"
    )
    args = parser.parse_args(argv)
    for name in PRETRAINED if args.name == "all" else [args.name]:
        if args.log_first:
            losses = log_first(name, args.out)
            print(f"{name}: first {len(losses)} losses {losses[0]:.4f} .. {losses[-1]:.4f} written to {name}.json")
            continue
        info = train(name, args.out, args.steps, progress=not args.quiet)
        figures = ", ".join(f"{k} {v:.1f}" for k, v in info["held_out"].items() if isinstance(v, float))
        print(
            f"{name}: {info['steps']} steps in {info['seconds']:.0f} s ({info['cpu_seconds']:.0f} s of CPU); held out: {figures}"
        )


if __name__ == "__main__":
    main()
