"""bench/scale.py and bench/gpu_checks.py: the published configs, small runs of both, and what
they import."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BENCH = ROOT / "bench" / "scale.py"
PUBLISHED = {  # layers, width, heads, KV heads, vocabulary
    "qwen2.5-7b": (28, 3584, 28, 4, 152064),
    "llama3.1-8b": (32, 4096, 32, 8, 128256),
    "gemma2-9b": (42, 3584, 16, 8, 256000),
}
NARROW = [  # Llama-3.1's config at a width a test can afford
    "hidden_size=256",
    "intermediate_size=512",
    "num_attention_heads=4",
    "num_key_value_heads=2",
    "vocab_size=1000",
    "bos_token_id=1",
    "eos_token_id=2",
]
KEYS = {
    "tokens_per_s",
    "flops_per_s",
    "peak_share",
    "train_step_s",
    "peak_memory_gb",
    "estimate_gb",
    "memory_per_pair_mb",
    "trials_per_device",
    "layers",
    "per_layer",
    "full_depth",
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_configs_load_with_their_published_shape(name):
    from transformers import AutoConfig

    fields = json.loads((ROOT / "bench" / "configs" / f"{name}.json").read_text())
    config = AutoConfig.for_model(**fields)
    shape = (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.vocab_size,
    )
    assert shape == PUBLISHED[name]
    assert config.architectures[0].lower().startswith(config.model_type.split("2")[0])
    if name == "gemma2-9b":
        assert (config.head_dim, config.query_pre_attn_scalar, config.sliding_window) == (
            256,
            256,
            4096,
        )
        assert (config.final_logit_softcapping, config.attn_logit_softcapping) == (30.0, 50.0)
        assert config.tie_word_embeddings
    else:
        assert not config.tie_word_embeddings
    if name == "llama3.1-8b":
        assert config.rope_parameters["rope_type"] == "llama3"
        assert config.rope_parameters["rope_theta"] == 500000.0


def test_scale_prints_every_figure_positive():
    argv = [sys.executable, str(BENCH), "--config", "llama3.1-8b", "--device", "cpu"]
    argv += ["--layers", "1", "--peak-flops", "1e11", "--pairs", "4"]
    argv += [arg for item in NARROW for arg in ("--override", item)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert KEYS <= set(out)
    assert out["layers"] == 1 and out["layers_full"] == 32 and out["dtype"] == "float32"
    for key in KEYS - {"layers", "per_layer", "full_depth"}:
        assert out[key] > 0, key
    assert 0 < out["peak_share"] < 1
    assert out["trials_per_device"] <= out["trials_per_device_shared_weights"]
    assert all(value > 0 for value in out["per_layer"].values())
    assert out["full_depth"]["weights_gb"] > out["weights_gb"]
    assert out["weights_gb"] < out["estimate_gb"] < out["full_depth"]["estimate_gb"]
    assert out["full_depth"]["tokens_per_s"] < out["tokens_per_s"]


def test_gpu_checks_agree_with_the_stock_forward_on_a_cpu():
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_checks

    out = gpu_checks.main(["--device", "cpu"])
    for name in PUBLISHED:
        figures = out[name]
        assert figures["stock_fp32"] < 1e-4, name
        assert figures["stock_bf16"] < 0.2, name  # the self-check's bf16 allowance, one token
        if name != "gemma2-9b":  # Gemma-2's weights are ten times larger here
            assert figures["bf16_vs_fp32"] < 0.1, name


def test_scale_imports_no_ray_optuna_mlflow_or_pyarrow():
    """A GPU box with only torch, transformers and peft runs bench/scale.py and
    bench/gpu_checks.py: importing them with those packages made unimportable must work, and
    must not load them."""
    code = (
        "import sys\n"
        "for name in ('ray', 'optuna', 'mlflow', 'pyarrow'):\n"
        "    sys.modules[name] = None\n"
        f"sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
        "import scale, gpu_checks\n"
        "print(sorted(m for m in ('ray', 'optuna', 'mlflow', 'pyarrow') if sys.modules[m]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
