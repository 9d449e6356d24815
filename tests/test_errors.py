"""Every bad input gets a message that names the argument, what was expected and what came."""

import pytest
import torch

import perceiver_edu as pe


@pytest.fixture
def model():
    torch.manual_seed(0)
    return pe.PerceiverResampler(pe.ResamplerConfig.tiny())  # embed_dim 32


def test_context_not_a_tensor(model):
    with pytest.raises(TypeError, match=r"context must be a torch.Tensor of shape \[b, s, e\]; got list"):
        model([[1.0] * 32])


def test_context_not_3d(model):
    with pytest.raises(
        ValueError, match=r"context must be 3-D \[b, s, e\].*got shape \(257, 32\) with 2 dims.*context\[None\]"
    ):
        model(torch.randn(257, 32))
    with pytest.raises(ValueError, match=r"\[b, m, s, e\].*got shape \(1, 1, 2, 1, 3, 32\) with 6 dims"):
        model(torch.randn(1, 1, 2, 1, 3, 32))


def test_embed_dim_mismatch(model):
    with pytest.raises(ValueError, match="context has embed_dim 64 but the resampler expects 32"):
        model(torch.randn(1, 5, 64))


def test_integer_context(model):
    with pytest.raises(
        TypeError, match=r"context must hold floating-point numbers; got dtype torch.int64.*context.float\(\)"
    ):
        model(torch.ones(1, 5, 32, dtype=torch.long))


def test_dtype_mismatch(model):
    with pytest.raises(
        TypeError, match="context has dtype torch.float64 but the resampler's weights are torch.float32"
    ):
        model(torch.randn(1, 5, 32, dtype=torch.float64))


def test_non_finite_context_is_refused_with_position(model):
    context = torch.randn(1, 5, 32)
    context[0, 3, 7] = float("nan")
    context[0, 4, 0] = float("inf")
    with pytest.raises(
        ValueError, match=r"2 NaN or infinite value\(s\), the first at index \(0, 3, 7\).*model.check_finite = False"
    ):
        model(context)


def test_finite_check_can_be_switched_off():
    torch.manual_seed(0)
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny())
    model.check_finite = False  # a policy of the run, not part of the architecture (not in the config)
    assert "check_finite" not in model.config.to_dict()
    context = torch.randn(1, 5, 32)
    context[0, 3, 7] = float("nan")
    _, trace = model(context, return_trace=True)  # runs, and the NaN spreads as a learner can then see
    assert torch.isnan(trace.attentions[0]).all()


def test_the_fast_path_follows_the_models_finite_policy():
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny())
    context = torch.randn(1, 5, 32)
    context[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"1 NaN or infinite value\(s\), the first at index \(0, 1, 2\)"):
        pe.FastResampler(model)(context)
    model.check_finite = False
    assert torch.isnan(pe.FastResampler(model)(context)).all()


def test_context_on_another_device(model):
    meta = torch.empty(1, 5, 32, device="meta")
    with pytest.raises(
        ValueError, match=r"context is on meta but the resampler is on cpu; move one of them, e.g. context.to\('cpu'\)"
    ):
        model(meta)


@pytest.mark.parametrize("field", ["embed_dim", "depth", "n_heads", "head_dim", "n_latents"])
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_sizes(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a positive int; got {value}"):
        pe.ResamplerConfig(**{field: value})


@pytest.mark.parametrize("value", [2.5, "4", True])
def test_sizes_of_the_wrong_type(value):
    with pytest.raises(TypeError, match=f"n_heads must be a positive int; got {value!r}"):
        pe.ResamplerConfig(n_heads=value)


def test_switch_of_the_wrong_type():
    with pytest.raises(TypeError, match="qk_norm must be True or False; got 1"):
        pe.ResamplerConfig(qk_norm=1)


def test_unknown_field_in_replace_and_bad_config_argument():
    with pytest.raises(TypeError, match=r"ResamplerConfig has no field\(s\) \['heads'\]"):
        pe.ResamplerConfig().replace(heads=3)
    with pytest.raises(TypeError, match="config must be a ResamplerConfig; got dict"):
        pe.PerceiverResampler({"embed_dim": 32})


def test_from_idefics_config_missing_fields():
    with pytest.raises(ValueError, match="perceiver_config"):
        pe.interop.config_from_idefics({"vision_config": {"embed_dim": 8}})
    with pytest.raises(ValueError, match="missing 'resampler_depth'"):
        pe.interop.config_from_idefics({"vision_config": {"embed_dim": 8}, "perceiver_config": {}})


def test_make_context_bad_kind_and_image_length():
    with pytest.raises(ValueError, match=r"kind must be one of \['random', 'structured', 'image'\]; got 'noise'"):
        pe.make_context("noise")
    with pytest.raises(ValueError, match=r"got 100. The nearest valid lengths are \[82, 101\]"):
        pe.make_context("image", context_length=100)


def test_pick_device_honours_and_checks_the_environment(monkeypatch):
    monkeypatch.setenv("PERCEIVER_EDU_DEVICE", "cpu")
    assert pe.pick_device() == "cpu"
    monkeypatch.setenv("PERCEIVER_EDU_DEVICE", "tpu")
    with pytest.raises(ValueError, match="PERCEIVER_EDU_DEVICE='tpu' but that device is not available here"):
        pe.pick_device()
    monkeypatch.delenv("PERCEIVER_EDU_DEVICE")
    assert pe.pick_device() == pe.available_devices()[0]
    assert pe.available_devices()[-1] == "cpu"
    assert (pe.pick_device() == "cuda") == torch.cuda.is_available()
