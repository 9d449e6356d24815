"""load_checkpoint on real checkpoints written by transformers' save_pretrained (small, local)."""

import json

import pytest
import torch

import perceiver_edu as pe

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402


def tiny_idefics(qk_norm=False, seed=0):
    config = transformers.IdeficsConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        cross_layer_interval=1,
        use_resampler=True,
        vision_config=dict(
            embed_dim=32, image_size=30, patch_size=15, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        perceiver_config=dict(
            use_resampler=True,
            resampler_depth=2,
            resampler_n_heads=2,
            resampler_head_dim=8,
            resampler_n_latents=4,
            qk_layer_norms_perceiver=qk_norm,
        ),
    )
    torch.manual_seed(seed)
    return transformers.IdeficsForVisionText2Text(config).eval()


def same_outputs(ours, hf_resampler, embed_dim=32):
    context = torch.randn(2, 10, embed_dim)
    with torch.no_grad():
        torch.testing.assert_close(ours(context), hf_resampler(context), atol=1e-5, rtol=1e-5)


def save_sharded(tmp_path_factory, name, model):
    """A multi-shard safetensors checkpoint with its config.json, as save_pretrained writes it."""
    path = tmp_path_factory.mktemp(name)
    model.save_pretrained(path, max_shard_size="20KB")
    return path, model


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return save_sharded(tmp_path_factory, "idefics-sharded", tiny_idefics(qk_norm=True))


def test_sharded_checkpoint_loads_and_matches_the_models_own_resampler(sharded):
    path, model = sharded
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2  # really sharded
    ours = pe.load_checkpoint(path)
    assert ours.config == pe.ResamplerConfig(32, 2, 2, 8, 4, qk_norm=True)
    same_outputs(ours, model.model.perceiver_resampler)


def test_only_the_resampler_tensors_are_read(sharded, monkeypatch):
    import safetensors

    path, _ = sharded
    opened, read = [], []
    real_open = safetensors.safe_open

    class Spy:
        def __init__(self, filename, framework):
            opened.append(filename)
            self.inner = real_open(filename, framework=framework)

        def __enter__(self):
            self.f = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def keys(self):
            return self.f.keys()

        def get_tensor(self, key):
            read.append(key)
            return self.f.get_tensor(key)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    pe.load_checkpoint(path)
    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    resampler_shards = {shard for key, shard in index.items() if "perceiver_resampler." in key}
    assert {p.split("/")[-1] for p in opened} == resampler_shards
    assert len(resampler_shards) < len(set(index.values()))
    assert read and all("perceiver_resampler." in key for key in read)


def test_single_safetensors_file_and_bin_file(tmp_path):
    model = tiny_idefics(seed=1)
    model.save_pretrained(tmp_path / "single")  # one model.safetensors
    ours = pe.load_checkpoint(tmp_path / "single")
    same_outputs(ours, model.model.perceiver_resampler)
    ours = pe.load_checkpoint(tmp_path / "single" / "model.safetensors")  # the file, config.json beside it
    same_outputs(ours, model.model.perceiver_resampler)

    (tmp_path / "bin").mkdir()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "single" / "config.json").read_text())
    same_outputs(pe.load_checkpoint(tmp_path / "bin"), model.model.perceiver_resampler)


def test_bin_files_are_never_unpickled_beyond_tensors(tmp_path, capfd):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"model.perceiver_resampler.latents": torch.zeros(4, 32), "x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        pe.load_checkpoint(tmp_path / "pytorch_model.bin")
    assert "this must never run" not in capfd.readouterr().out


def test_our_own_export_round_trips_without_config(tmp_path):
    torch.manual_seed(0)
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny(qk_norm=True))
    save_file(pe.interop.to_idefics(model), tmp_path / "resampler.safetensors")
    loaded = pe.load_checkpoint(tmp_path / "resampler.safetensors")  # qk norm tells head_dim
    assert loaded.config == model.config
    context = torch.randn(1, 7, 32)
    assert torch.equal(loaded(context), model(context))


def test_heads_cannot_be_guessed_without_config_or_qk_norm(tmp_path):
    model = pe.PerceiverResampler(pe.ResamplerConfig.tiny())
    save_file(pe.interop.to_idefics(model), tmp_path / "resampler.safetensors")
    with pytest.raises(ValueError, match="n_heads"):
        pe.load_checkpoint(tmp_path / "resampler.safetensors")
    loaded = pe.load_checkpoint(tmp_path / "resampler.safetensors", n_heads=4)
    assert loaded.config == model.config


def test_missing_and_unexpected_keys_are_listed(tmp_path, sharded):
    path, _ = sharded
    state = {}
    for shard in sorted(path.glob("*.safetensors")):
        state.update(load_file(shard))
    del state["model.perceiver_resampler.blocks.1.0.v_proj.weight"]
    state["model.perceiver_resampler.blocks.0.0.extra.weight"] = torch.zeros(1)
    (tmp_path / "broken").mkdir()
    save_file(state, tmp_path / "broken" / "model.safetensors")
    (tmp_path / "broken" / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ValueError) as err:
        pe.load_checkpoint(tmp_path / "broken")
    assert "missing keys (1): blocks.1.0.v_proj.weight" in str(err.value)
    assert "unexpected keys (1): blocks.0.0.extra.weight" in str(err.value)


def test_config_that_disagrees_with_the_tensors(tmp_path, sharded):
    path, _ = sharded
    config = json.loads((path / "config.json").read_text())
    config["perceiver_config"]["resampler_n_latents"] = 99
    target = tmp_path / "disagree"
    target.mkdir()
    for f in path.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="n_latents: config.json says 99, tensors say 4"):
        pe.load_checkpoint(target)


def test_checkpoint_without_a_resampler(tmp_path):
    save_file({"model.embed_tokens.weight": torch.zeros(3, 2)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="no perceiver resampler weights"):
        pe.load_checkpoint(tmp_path)


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pe.load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="expected model.safetensors"):
        pe.load_checkpoint(tmp_path)
    (tmp_path / "weights.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"\.safetensors or \.bin"):
        pe.load_checkpoint(tmp_path / "weights.txt")


# -- load_checkpoint ---------------------------------------------------------------------------------


def tiny_idefics2(seed=0):
    config = transformers.Idefics2Config(
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        text_config=dict(
            model_type="mistral",
            vocab_size=100,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        ),
        perceiver_config=dict(
            hidden_size=32,
            rms_norm_eps=1e-6,
            resampler_n_latents=4,
            resampler_depth=2,
            resampler_n_heads=4,
            resampler_head_dim=8,
            num_key_value_heads=2,
        ),
    )
    torch.manual_seed(seed)
    model = transformers.Idefics2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # RMSNorm weights and latents start at ones: move them so a swap would show
        for p in model.model.connector.perceiver_resampler.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def idefics2_sharded(tmp_path_factory):
    return save_sharded(tmp_path_factory, "idefics2-sharded", tiny_idefics2())


def test_load_checkpoint_reads_an_idefics2_checkpoint_by_model_type(idefics2_sharded):
    path, model = idefics2_sharded
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2  # really sharded
    ours = pe.load_checkpoint(path)
    assert ours.config == pe.ResamplerConfig.idefics2(
        embed_dim=32, depth=2, n_heads=4, head_dim=8, n_latents=4, n_kv_heads=2, norm_eps=1e-6
    )
    hf = model.model.connector.perceiver_resampler
    context, mask = torch.randn(2, 9, 32), torch.tensor([[1] * 9, [1] * 4 + [0] * 5])
    with torch.no_grad():
        torch.testing.assert_close(
            ours(context, attention_mask=mask), hf(context, attention_mask=mask), atol=1e-5, rtol=1e-5
        )


def test_load_checkpoint_reads_an_idefics_checkpoint_too(sharded):
    path, model = sharded
    ours = pe.load_checkpoint(path)
    assert ours.config == pe.ResamplerConfig(32, 2, 2, 8, 4, qk_norm=True)
    same_outputs(ours, model.model.perceiver_resampler)


@pytest.mark.parametrize("model_type, says", [("idefics3", "Idefics3"), ("smolvlm", "SmolVLM")])
def test_families_without_a_resampler_get_a_message_that_says_so(tmp_path, model_type, says):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ValueError, match=rf"{model_type}.*no Perceiver Resampler: {says}.*pixel shuffle"):
        pe.load_checkpoint(tmp_path)


def test_an_unknown_model_type_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match=r"model_type 'llava'.*'idefics' or 'idefics2'"):
        pe.load_checkpoint(tmp_path)


def test_a_truncated_or_corrupt_shard_is_named(tmp_path, idefics2_sharded):
    path, _ = idefics2_sharded
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    shard = sorted({s for k, s in index.items() if "perceiver_resampler" in k})[0]
    data = (tmp_path / shard).read_bytes()
    (tmp_path / shard).write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(ValueError, match=rf"cannot read checkpoint file .*{shard}: it looks truncated or corrupt"):
        pe.load_checkpoint(tmp_path)
    (tmp_path / shard).write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=rf"{shard}: it looks truncated or corrupt"):
        pe.load_checkpoint(tmp_path)
    (tmp_path / shard).unlink()
    with pytest.raises(FileNotFoundError, match=rf"lists shard\(s\) that are not in .*{shard}"):
        pe.load_checkpoint(tmp_path)


def test_load_checkpoint_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pe.load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json: it is not valid JSON"):
        pe.load_checkpoint(tmp_path)
