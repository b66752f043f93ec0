import json
from pathlib import Path

import pytest
import torch

from steerfront import memory
from steerfront.errors import SteerfrontError
from steerfront.memory import (
    ACTIVATION_SHARE,
    CPU_TOKENS,
    GB,
    MemoryCache,
    check_share,
    layer_bytes,
    tensor_bytes,
    token_bytes,
    tokens_per_batch,
)

CONFIGS = Path(__file__).resolve().parents[1] / "bench" / "configs"
NAMES = ("qwen2.5-7b", "llama3.1-8b", "gemma2-9b")


def config_of(name, **changes):
    from transformers import AutoConfig

    return AutoConfig.for_model(**{**json.loads((CONFIGS / f"{name}.json").read_text()), **changes})


def tensor(kib):
    return torch.zeros(kib * 256)  # fp32: 4 bytes an element


def test_the_least_recently_used_entry_goes_first():
    cache = MemoryCache(3 << 10)
    made = []

    def make(name):
        made.append(name)
        return tensor(1)

    for name in "abc":
        cache.get(name, lambda name=name: make(name))
    cache.get("a", lambda: make("a"))  # kept: used again, now the most recent
    cache.get("d", lambda: make("d"))  # over budget: b, the least recently used, goes
    assert cache.keys() == ["c", "a", "d"] and made == ["a", "b", "c", "d"]
    assert cache.nbytes == 3 << 10 and len(cache) == 3
    cache.get("b", lambda: make("b"))  # made again
    assert cache.keys() == ["a", "d", "b"] and made[-1] == "b"


def test_byte_accounting():
    cache = MemoryCache(10 << 10)
    base = tensor(2)
    cache.get("views", lambda: [base, base[:10], {"again": base}])  # one storage, counted once
    cache.get("pair", lambda: (tensor(1), {"x": tensor(3)}))
    assert cache.nbytes == (2 + 4) << 10
    too_big = cache.get("big", lambda: tensor(11))  # larger than the budget: returned, not kept
    assert too_big.numel() == 11 * 256 and "big" not in cache and cache.nbytes == 6 << 10
    cache.get("fills", lambda: tensor(6))  # 12 KiB: the oldest entry goes
    assert cache.keys() == ["pair", "fills"] and cache.nbytes == 10 << 10
    nothing = MemoryCache(0)
    nothing.get("a", lambda: tensor(1))
    assert len(nothing) == 0 and nothing.nbytes == 0


def test_an_intervention_and_packed_batches_are_counted(tiny_lm):
    from steerfront.data import encode_pairs, load_concept
    from steerfront.forward import pack
    from steerfront.methods import init_intervention

    lora = init_intervention("lora", tiny_lm, 1, rank=2)
    assert tensor_bytes(lora) == 4 * (2 * 64 + 32 * 2)
    encoded = encode_pairs(tiny_lm.tokenizer, load_concept("agreeableness"))[:5]
    batches = pack(encoded, 4096)
    fields = [getattr(b, f) for b in batches for f in b.__dataclass_fields__]
    assert tensor_bytes(batches) == sum(t.nbytes for t in fields) > 0


def test_an_evicted_prefix_is_recomputed_the_same(tiny_lm, monkeypatch):
    from steerfront import forward
    from steerfront.data import encode_pairs, load_concept
    from steerfront.methods import init_intervention
    from steerfront.scoring import evaluate as evaluate_module
    from steerfront.scoring.evaluate import evaluate, prefix

    encoded = encode_pairs(tiny_lm.tokenizer, load_concept("sentiment"))[:6]
    one = tensor_bytes(prefix(tiny_lm, encoded, 1, MemoryCache(1 << 30)))
    cache = MemoryCache(one + one // 2)  # room for one layer's prefix, not two
    runs = []
    real = forward.frozen_prefix

    def counted(lm, batches, layer, progress=False):
        runs.append(layer)
        return real(lm, batches, layer, progress)

    monkeypatch.setattr(evaluate_module, "frozen_prefix", counted)
    vectors = {layer: init_intervention("vector", tiny_lm, layer - 1) for layer in (1, 2)}
    for v in vectors.values():
        v.params["v"].normal_(generator=torch.Generator().manual_seed(0))
    first = evaluate(tiny_lm, encoded, vectors[1], [0.5, 2.0], cache=cache)
    evaluate(tiny_lm, encoded, vectors[1], [1.0], cache=cache)  # kept
    evaluate(tiny_lm, encoded, vectors[2], [1.0], cache=cache)  # evicts layer 1's
    again = evaluate(tiny_lm, encoded, vectors[1], [0.5, 2.0], cache=cache)
    assert runs == [1, 2, 1] and len(cache) == 1 and cache.nbytes <= cache.budget
    torch.testing.assert_close(torch.tensor(again.l_p), torch.tensor(first.l_p), rtol=0, atol=0)


def saved_bytes_per_token(config, dtype, width):
    """What autograd keeps of one decoder layer per token (weights left out), on the meta
    device: each architecture's own forward, nothing allocated."""
    from transformers import AutoModelForCausalLM

    config.num_hidden_layers = 1
    config.layer_types = (getattr(config, "layer_types", None) or ["full_attention"])[:1]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).requires_grad_(False)
    weights = {p.untyped_storage()._cdata for p in model.parameters()}
    saved = {}

    def keep(t):
        storage = t.untyped_storage()
        if storage._cdata not in weights:
            saved[storage._cdata] = storage.nbytes()
        return t

    x = torch.empty(1, width, config.hidden_size, device="meta", dtype=dtype, requires_grad=True)
    positions = torch.arange(width, device="meta")[None]
    mask = torch.empty(1, 1, width, width, device="meta", dtype=dtype)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model.model.layers[0](
            x,
            attention_mask=mask,
            position_ids=positions,
            position_embeddings=model.model.rotary_emb(x, positions),
        )
    return sum(saved.values()) / width


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_layers_activations_bound_what_autograd_keeps(name, dtype):
    for width in (64, 1024):
        measured = saved_bytes_per_token(config_of(name), dtype, width)
        estimate = layer_bytes(config_of(name), dtype, width)
        assert measured <= estimate <= 1.6 * measured, (width, measured, estimate)


def test_tokens_per_batch_scale_with_free_memory(monkeypatch):
    config = config_of("llama3.1-8b")
    per_token = token_bytes(config, torch.bfloat16, 100)
    gpu = torch.device("cuda")
    for free in (8 * GB, 16 * GB):
        monkeypatch.setattr(memory, "free_memory", lambda _device, free=free: int(free))
        tokens = tokens_per_batch(config, torch.bfloat16, gpu, 100)
        assert tokens == int(ACTIVATION_SHARE * free) // per_token
        assert tokens_per_batch(config, torch.bfloat16, gpu, 100, copies=2) == tokens // 2
    assert tokens_per_batch(config, torch.bfloat16, gpu, 100, stored_layers=32) < tokens / 32
    monkeypatch.setattr(memory, "free_memory", lambda _device: 0)
    assert tokens_per_batch(config, torch.bfloat16, gpu, 100) == 100  # one row, at least


def test_a_cpu_keeps_its_batch_unless_memory_is_short(monkeypatch):
    config, cpu = config_of("llama3.1-8b"), torch.device("cpu")
    assert tokens_per_batch(config, torch.float32, cpu, 100) == CPU_TOKENS
    monkeypatch.setattr(memory, "free_memory", lambda _device: int(0.5 * GB))
    assert 100 <= tokens_per_batch(config, torch.float32, cpu, 100) < CPU_TOKENS


def test_parameters_counted_from_the_configuration():
    counts = {name: memory.param_count(config_of(name)) / 1e9 for name in NAMES}
    assert counts == pytest.approx(
        {"qwen2.5-7b": 7.62, "llama3.1-8b": 8.03, "gemma2-9b": 9.24}, abs=0.01
    )


GPU_24 = 24 * 2**30  # a 24 GB card (RTX 4090: 24 GiB)


def test_two_9b_trials_on_a_24_gb_gpu_are_refused_naming_the_share_that_fits():
    config = config_of("gemma2-9b")
    with pytest.raises(SteerfrontError) as refused:
        check_share(config, torch.bfloat16, GPU_24, 0.5)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("--gpus-per-trial 0.5 gives a trial 12.9 GB of a 25.8 GB GPU, ")
    smallest = float(message.rsplit("use --gpus-per-trial ", 1)[1].split()[0])
    assert 0.5 < smallest <= 1.0 and message.endswith(f"use --gpus-per-trial {smallest:g} or more")
    fits = check_share(config, torch.bfloat16, GPU_24, smallest)
    assert fits["total"] <= smallest * GPU_24
    with pytest.raises(SteerfrontError):
        check_share(config, torch.bfloat16, GPU_24, smallest - 0.01)
    parts = check_share(config, torch.bfloat16, GPU_24, 1.0)  # one trial a GPU: accepted
    assert parts["weights"] == pytest.approx(18.5 * GB, rel=0.01)
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")


def test_what_a_gpu_holds_depends_on_the_model_cache_and_forms():
    eight_b, h100 = config_of("llama3.1-8b"), 80 * GB
    check_share(eight_b, torch.bfloat16, h100, 0.33)  # three 8B trials on an 80 GB GPU
    with pytest.raises(SteerfrontError, match=r"use --gpus-per-trial 0\.\d+ or more$"):
        check_share(eight_b, torch.bfloat16, h100, 0.33, cache_gb=8.0)
    vector = check_share(eight_b, torch.bfloat16, h100, 0.33, forms=("vector",))
    full = check_share(eight_b, torch.bfloat16, h100, 0.33)
    assert vector["optimizer"] < full["optimizer"] / 1000
    with pytest.raises(
        SteerfrontError, match=r"a whole GPU is too small \(a trial runs on one GPU\)$"
    ):
        check_share(config_of("gemma2-9b"), torch.float32, GPU_24, 1.0)


def test_generation_rows_scale_with_free_memory(monkeypatch):
    config, gpu, cpu = config_of("qwen2.5-7b"), torch.device("cuda"), torch.device("cpu")
    rows = {}
    for free in (8, 16):
        monkeypatch.setattr(memory, "free_memory", lambda _device, free=free: int(free * GB))
        rows[free] = memory.generation_rows(config, torch.bfloat16, gpu, 600)
    assert rows[16] in (2 * rows[8], 2 * rows[8] + 1) and rows[8] > 1
    # the KV cache grows with the length: a longer answer takes fewer rows
    assert memory.generation_rows(config, torch.bfloat16, gpu, 6000) < rows[16] / 5
    assert memory.generation_rows(config, torch.float32, cpu, 600) == 21  # 16 GB of RAM
    monkeypatch.setattr(memory, "free_memory", lambda _device: int(1000 * GB))
    assert memory.generation_rows(config, torch.float32, cpu, 600) == memory.CPU_ROWS
    monkeypatch.setattr(memory, "free_memory", lambda _device: 0)
    assert memory.generation_rows(config, torch.bfloat16, gpu, 600) == 1  # one row, at least


def test_a_search_refuses_a_gpu_share_before_the_model_loads(tmp_path, monkeypatch):
    """The worker that scores the unsteered model checks the share from the configuration
    alone: a folder with nothing but Gemma-2-9B's config.json is enough to refuse."""
    from steerfront.search import worker
    from steerfront.search.space import load_space
    from steerfront.search.trial import SearchSetup

    (tmp_path / "config.json").write_text((CONFIGS / "gemma2-9b.json").read_text())
    monkeypatch.setattr(worker, "resolve", lambda *_: (torch.device("cuda"), torch.bfloat16))
    for module in (worker, memory):
        monkeypatch.setattr(module, "device_memory", lambda _device: GPU_24)
    setup = SearchSetup(
        str(tmp_path), "sentiment", None, 0.2, 0.2, 0, str(tmp_path), "s", {}, gpus_per_trial=0.5
    )
    space = load_space(None, {"layers": [20], "forms": ["lora"]})
    with pytest.raises(SteerfrontError, match=r"^--gpus-per-trial 0\.5 gives a trial 12\.9 GB"):
        worker.unsteered(setup, space)


@pytest.fixture(autouse=True)
def whole_machine(monkeypatch):
    """A search worker run in this process (tests/search) sets its CPU share; the budgets
    here are a process alone on the machine, unless a test sets another."""
    monkeypatch.setattr(memory, "_CPU_SHARE", 1.0)


def test_a_cpu_worker_budgets_its_share_of_the_free_memory(monkeypatch):
    config, cpu, gpu = config_of("llama3.1-8b"), torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(memory, "free_memory", lambda _device: int(2 * GB))
    whole = tokens_per_batch(config, torch.float32, cpu, 100)
    rows = memory.generation_rows(config, torch.float32, cpu, 600)
    on_gpu = tokens_per_batch(config, torch.bfloat16, gpu, 100)
    memory.set_cpu_share(0.25)  # one CPU of four
    per_token = token_bytes(config, torch.float32, 100)
    assert whole == int(ACTIVATION_SHARE * 2 * GB) // per_token
    assert (
        tokens_per_batch(config, torch.float32, cpu, 100)
        == int(ACTIVATION_SHARE * 0.25 * 2 * GB) // per_token
    )
    assert memory.generation_rows(config, torch.float32, cpu, 600) in (rows // 4, rows // 4 + 1)
    assert tokens_per_batch(config, torch.bfloat16, gpu, 100) == on_gpu  # a GPU's own share


def test_a_search_worker_on_a_cpu_takes_its_share(tiny_model_dir, tmp_path):
    import os

    from steerfront.search.trial import SearchSetup

    setup = SearchSetup(
        str(tiny_model_dir), "sentiment", None, 0.2, 0.2, 0, str(tmp_path), "s", {},
        device="cpu", cpus_per_trial=1.0,
    )  # fmt: skip
    setup.load()
    assert memory._CPU_SHARE == min(1.0, 1 / (os.cpu_count() or 1))
