"""Memory that cannot run away: batch sizes from the free memory, a worker's caches bounded in
bytes, and a trial's peak estimated from the model's configuration before a search starts.

A search worker holds the model, the frozen prefix of every (pair set, layer) it scores and
the interventions it trains, and trials may share a GPU (`--gpus-per-trial 0.5`). Activation
sizes come from the configuration (`layer_bytes`), checked against what autograd keeps of each
architecture's layers in tests/test_memory.py.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TypeVar

import torch

from steerfront.defaults import CACHE_SHARE
from steerfront.errors import SteerfrontError

T = TypeVar("T")
GB = 1e9
PAGE = os.sysconf("SC_PAGE_SIZE")
# A batch's activations may take this share of the free memory (the rest: the allocator's
# fragmentation, kernels' workspace, the logits). Only how much runs at once follows it, never
# what is computed (tests/test_reproducible.py lowers it to put a tiny model under pressure).
ACTIVATION_SHARE = 0.5
# On a CPU a batch of this many padded tokens keeps the cores busy; larger ones only fall out of
# the CPU's caches (measured with bench/scoring_speed.py), so the CPU's budget stops here.
CPU_TOKENS = 4096
# Rows a CPU decodes at once: enough to keep the cores busy, little padding.
CPU_ROWS = 64
# The least a trial must hold to train: one pair's add and sub rows of 128 tokens.
MIN_TOKENS, MIN_WIDTH = 256, 128
# A CUDA process's context and kernels, outside PyTorch's allocator.
CUDA_CONTEXT = int(0.5 * GB)
# Adam's bytes per trainable parameter: the fp32 parameter, its gradient, two moments and the
# best parameters kept for early stopping.
OPTIMIZER_BYTES = 5 * 4


# This process's share of a CPU machine's free RAM: its CPUs over the machine's. A search's
# CPU workers set theirs (`set_cpu_share`), so that trials side by side do not each budget the
# whole; a process alone on the machine keeps 1. (On a GPU, the share is the process's memory
# fraction, which `free_memory` already reads.)
_CPU_SHARE = 1.0


def set_cpu_share(share: float) -> None:
    """Budget this process's batches within `share` (0 to 1) of a CPU machine's free RAM."""
    global _CPU_SHARE
    _CPU_SHARE = min(1.0, max(share, 0.0))


def activation_budget(device: torch.device) -> int:
    """Bytes a batch's activations may take now: `ACTIVATION_SHARE` of the free memory (on a
    CPU, of this process's share of it)."""
    share = ACTIVATION_SHARE * (_CPU_SHARE if device.type == "cpu" else 1.0)
    return int(share * free_memory(device))


def device_memory(device: torch.device) -> int:
    """The device's memory in bytes: the GPU's, or the machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * PAGE


def free_memory(device: torch.device) -> int:
    """Bytes this process may still allocate: on a GPU, what the device has free plus what
    PyTorch holds unused, within the process's share (`set_per_process_memory_fraction`); on a
    CPU, the RAM the kernel reports available."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        allocated = torch.cuda.memory_allocated(device)
        held = torch.cuda.memory_reserved(device) - allocated
        share = torch.cuda.get_per_process_memory_fraction(device)
        return max(0, min(free + held, int(share * total) - allocated))
    available = proc_bytes("/proc/meminfo", "MemAvailable")
    return available if available is not None else os.sysconf("SC_AVPHYS_PAGES") * PAGE


def proc_bytes(path: str, field: str) -> int | None:
    """A size the kernel reports in kB in a /proc file (`MemAvailable`, `VmRSS`), in bytes;
    None off Linux."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def layer_bytes(config: object, dtype: torch.dtype, width: int) -> int:
    """Activation bytes of one decoder layer per token, in rows `width` tokens long: the MLP's
    gate, up, activation and product, the norms and residuals (some in fp32), and 8 bytes a
    head and key for the attention scores (eager attention with Gemma-2's soft-cap keeps them
    in `dtype` before and after the cap, and in fp32 after the softmax). An upper bound on
    what autograd keeps of each layer (tests/test_memory.py measures it), and so on what a
    layer works on in a forward without gradients."""
    size = torch.finfo(dtype).bits // 8
    mlp = 4 * size * config.intermediate_size + 16 * config.hidden_size
    return mlp + 8 * config.num_attention_heads * width


def token_bytes(config: object, dtype: torch.dtype, width: int, stored_layers: int = 0) -> int:
    """Activation bytes a padded token costs. Scoring runs a layer at a time: one layer's
    (`layer_bytes`). Training keeps as much for each of `stored_layers` layers (those above the
    frozen prefix), and the logits at the token in `dtype` and fp32 with their log-normaliser
    (every token counted as scored: an upper bound)."""
    size = torch.finfo(dtype).bits // 8
    logits = (size + 8) * config.vocab_size if stored_layers else 0
    return layer_bytes(config, dtype, width) * (1 + stored_layers) + logits


def tokens_per_batch(
    config: object,
    dtype: torch.dtype,
    device: torch.device,
    width: int,
    stored_layers: int = 0,
    copies: int = 1,
    kept: int = 0,
) -> int:
    """Padded tokens per batch, each run `copies` times at once and keeping `kept` bytes a
    token beside (every layer's hidden states, say): `ACTIVATION_SHARE` of the free memory
    over their cost (`activation_budget`; at least one row); on a CPU no more than
    `CPU_TOKENS`. It says how a batch is cut, and callers keep what they compute independent
    of it (the free memory changes with whatever else runs)."""
    per_token = copies * token_bytes(config, dtype, width, stored_layers) + kept
    tokens = activation_budget(device) // per_token
    if device.type == "cpu":
        tokens = min(tokens, CPU_TOKENS)
    return max(tokens, width)


def generation_rows(config: object, dtype: torch.dtype, device: torch.device, length: int) -> int:
    """Rows decoded at once, each up to `length` tokens (prompt and answer): per row its KV
    cache, the prompt's pass through one layer and the logits at one position, within
    `activation_budget`; on a CPU no more than `CPU_ROWS`."""
    size = torch.finfo(dtype).bits // 8
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * heads * head_dim * size * length
    per_row = kv + length * layer_bytes(config, dtype, length) + (size + 8) * config.vocab_size
    rows = activation_budget(device) // per_row
    if device.type == "cpu":
        rows = min(rows, CPU_ROWS)
    return max(rows, 1)


def release_unused() -> None:
    """Hand the C heap's free pages back to the system. glibc keeps what a process frees for
    its next allocations: after a training on a CPU, most of a worker's resident memory is
    activations already freed (0.8 of 2.1 GB on the default model). A no-op off glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def default_cache_bytes(device: torch.device, share: float = 1.0) -> int:
    """The default cache budget: `CACHE_SHARE` of the worker's share of the device's memory."""
    return int(CACHE_SHARE * share * device_memory(device))


def tensor_bytes(value: object) -> int:
    """Bytes of the tensors in `value` (nested in lists, tuples, dicts and dataclasses), each
    storage counted once."""
    storages: dict[int, int] = {}

    def walk(item: object) -> None:
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(item, dict):
            for v in item.values():
                walk(v)
        elif isinstance(item, list | tuple):
            for v in item:
                walk(v)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            walk(vars(item))

    walk(value)
    return sum(storages.values())


class MemoryCache:
    """What a worker keeps between calls (frozen prefixes, trained interventions), bounded by
    `budget` bytes of tensors; the least recently used entry goes first. An entry larger than
    the whole budget is made and returned, not kept (so `MemoryCache(0)` keeps nothing)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.nbytes = 0
        self._entries: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        """The entry `key`, made by `make()` if it is not kept."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key][0]
        value = make()
        size = tensor_bytes(value)
        if size <= self.budget:
            self._entries[key] = value, size
            self.nbytes += size
            while self.nbytes > self.budget:
                _, (_, freed) = self._entries.popitem(last=False)
                self.nbytes -= freed
        return value

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[Hashable]:
        """Keys from the least to the most recently used."""
        return list(self._entries)


def param_count(config: object) -> int:
    """Parameters of the model `config` describes (tied weights once), built on the meta
    device: nothing allocated, every architecture counted as transformers builds it."""
    return _param_count(config.to_json_string())


@functools.cache
def _param_count(config_json: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**json.loads(config_json)))
    return sum(p.numel() for p in model.parameters())


def trial_memory(
    config: object,
    dtype: torch.dtype,
    cache_bytes: int,
    forms: tuple[str, ...] = ("vector", "lora", "local_weight"),
    rank: int = 8,
    stored_layers: int | None = None,
    tokens: int = MIN_TOKENS,
    width: int = MIN_WIDTH,
) -> dict[str, int]:
    """A trial's peak memory on a GPU in bytes, by part: the weights in `dtype`, the caches'
    budget, Adam's state for the largest of `forms`, a training batch of `tokens` padded
    tokens through `stored_layers` layers (default: all) and the CUDA context."""
    d, ff = config.hidden_size, config.intermediate_size
    trainable = {"vector": d, "lora": rank * (d + ff), "local_weight": d * ff + d}
    layers = config.num_hidden_layers if stored_layers is None else stored_layers
    parts = {
        "weights": param_count(config) * (torch.finfo(dtype).bits // 8),
        "cache": cache_bytes,
        "optimizer": OPTIMIZER_BYTES * max(trainable[form] for form in forms),
        "activations": tokens * token_bytes(config, dtype, width, layers),
        "context": CUDA_CONTEXT,
    }
    parts["total"] = sum(parts.values())
    return parts


def check_share(
    config: object,
    dtype: torch.dtype,
    device_bytes: int,
    share: float,
    cache_gb: float | None = None,
    **kwargs: object,
) -> dict[str, int]:
    """Refuse, in one line, a `--gpus-per-trial` share of a GPU of `device_bytes` that cannot
    hold a trial (`trial_memory`), naming the smallest share that can; the estimate otherwise.
    Without `cache_gb` the cache takes its default, a share of the trial's memory."""

    def need(s: float) -> dict[str, int]:
        cache = int(cache_gb * GB) if cache_gb is not None else int(CACHE_SHARE * s * device_bytes)
        return trial_memory(config, dtype, cache, **kwargs)

    parts = need(share)
    if parts["total"] <= share * device_bytes:
        return parts
    smallest = next(
        (s / 100 for s in range(1, 101) if need(s / 100)["total"] <= s / 100 * device_bytes), None
    )
    detail = ", ".join(f"{k} {v / GB:.1f}" for k, v in parts.items() if k != "total")
    what = (
        f"--gpus-per-trial {share:g} gives a trial {share * device_bytes / GB:.1f} GB of a "
        f"{device_bytes / GB:.1f} GB GPU, but a trial needs about {parts['total'] / GB:.1f} GB "
        f"({detail})"
    )
    if smallest is None:
        raise SteerfrontError(f"{what}: a whole GPU is too small (a trial runs on one GPU)")
    raise SteerfrontError(f"{what}: use --gpus-per-trial {smallest:g} or more")
