"""cost.step_params, the parameter count by formula, against the modules' own parameters."""

import pytest
import torch

import perceiver_edu as pe
from perceiver_edu import cost

CONFIGS = {
    "idefics": pe.ResamplerConfig.idefics(),
    "idefics qk-norm": pe.ResamplerConfig.idefics(qk_norm=True),
    "idefics2": pe.ResamplerConfig.idefics2(),
    "flamingo": pe.ResamplerConfig.flamingo(),
    "tiny, media and frames": pe.ResamplerConfig.tiny(mlp="gelu", n_media_embeds=3, n_frame_embeds=4),
    "tiny, rms, qk-norm, 2 k/v heads": pe.ResamplerConfig.tiny(norm="rms", qk_norm=True, n_kv_heads=2),
    "tiny, no join": pe.ResamplerConfig.tiny(latents_in_kv=False),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_formula_equals_the_model(name):
    config = CONFIGS[name]
    with torch.device("meta"):  # shapes only: the IDEFICS2-sized model needs no memory
        model = pe.PerceiverResampler(config)
    assert sum(cost.step_params(config).values()) == sum(p.numel() for p in model.parameters())


def test_idefics_mlp_holds_most_parameters_but_not_most_flops():
    config = pe.ResamplerConfig.idefics()
    params, flops = cost.step_params(config), cost.step_flops(config, 1, 257)
    assert round(sum(params.values()) / 1e6) == 126
    assert params["mlp"] / sum(params.values()) > 0.6 > flops["mlp (fc, c_proj)"] / sum(flops.values())
