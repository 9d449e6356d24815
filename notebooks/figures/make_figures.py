"""Draw the README pictures of chapters 2 and 4 from the shipped weights, as the chapters draw them.

    python notebooks/figures/make_figures.py

latents_on_scene.png   chapter 2, section 3: one head of the last layer, each latent over a held-out scene
latents_on_scenes.png  chapter 4, section 9: three held-out scenes, each latent's last-layer attention
"""

from pathlib import Path

import torch

import perceiver_edu as pe
from perceiver_edu import scenes, toy, viz

HERE = Path(__file__).resolve().parent
CHAPTER2_SCENE, CHAPTER2_LAYER, CHAPTER2_HEAD = 0, 1, 0  # as in chapter 2 (scene 0, layer 1, head 0)
CHAPTER4_SCENES = [0, 1, 2]  # held_out_scenes(100, seed=0), as in chapter 4


def main() -> None:
    model = pe.pretrained("scenes")
    with torch.no_grad():
        scene = scenes.held_out_scenes(8, seed=0)[CHAPTER2_SCENE]
        _, trace = model(scene.images, return_trace=True)
        fig = viz.plot_latents_on_scene(
            toy.image_attention(trace)[CHAPTER2_LAYER, 0, CHAPTER2_HEAD], scene.images[0], boxes=scene.boxes[0],
            labels=scene.labels[0],
            title=f"Trained scenes model, held-out scene: layer {CHAPTER2_LAYER}, head {CHAPTER2_HEAD}, each latent")
        fig.savefig(HERE / "latents_on_scene.png", dpi=viz.DPI, bbox_inches="tight")

        held_out = scenes.held_out_scenes(100, seed=0)
        _, trace = model(held_out.images[CHAPTER4_SCENES], return_trace=True)
        fig = viz.plot_latents_on_scene(
            scenes.latent_maps(trace), [held_out.images[i] for i in CHAPTER4_SCENES],
            boxes=[held_out.boxes[i] for i in CHAPTER4_SCENES], labels=[held_out.labels[i] for i in CHAPTER4_SCENES],
            row_labels=[f"scene {i}" for i in CHAPTER4_SCENES],
            title="Trained scenes model, last layer, mean over heads: where each latent looks")
        fig.savefig(HERE / "latents_on_scenes.png", dpi=viz.DPI, bbox_inches="tight")


if __name__ == "__main__":
    main()
