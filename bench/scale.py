"""The evaluator and a training step on models of real shape, random weights (issue #16).

Builds a model from a published config (bench/configs/NAME.json: Qwen2.5-7B-Instruct,
Llama-3.1-8B-Instruct, Gemma-2-9B-it) with random weights — it costs what the real one costs —
cut to `--layers` decoder layers when given (on a CPU, to fit in memory: 2 by default), and
times on random token pairs (prompts of ~50 tokens, a shared 8-token head as a chat template
gives; half the pairs with 1-token completions, half with ~20-token ones):

- the evaluator (`steerfront.scoring.evaluate.evaluate`), a LoRA at layer 0 so every layer run
  is steered, at `--m-values` values of m;
- training (`steerfront.methods.train.train`, SPLIT on the same LoRA, `--steps` steps).

Prints one JSON line: `tokens_per_s` (tokens through the layers per second: each pair's packed
sequence once per value of m), `flops_per_s` (2 x weights x tokens over the layers run, plus the
head at the scored positions; attention's own products left out), `peak_share` (with
`--peak-flops`), `train_step_s` (a training call's time over its steps, setup included),
`peak_memory_gb` (CUDA: max_memory_allocated; CPU: the process's peak RSS), `estimate_gb`
(what steerfront.memory estimates of that peak from the configuration alone: weights, the
LoRA's optimizer state, a training step's activations), `weights_gb`,
`memory_per_pair_mb` (a trial's memory above the weights, evaluation and training, per pair),
`trials_per_device` (trials, each with its own copy of the weights as one model per worker has,
that fit in the device's memory: the GPU's, or the machine's RAM) and
`trials_per_device_shared_weights`; with the depth cut, `per_layer` figures and a
`full_depth` estimate scaled from them.

    python bench/scale.py --config llama3.1-8b --device cpu            # 2 layers, fp32
    python bench/scale.py --config gemma2-9b --device cuda --peak-flops 989e12   # all, bf16

`--override key=value` changes a config field (tests shrink the width with it). It imports
nothing of Ray, Optuna or MLflow: a GPU box with torch, transformers and peft runs it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from steerfront.data import EncodedPair  # noqa: E402
from steerfront.lm import LM, choose_kernel  # noqa: E402
from steerfront.memory import CUDA_CONTEXT, device_memory, proc_bytes, trial_memory  # noqa: E402
from steerfront.methods.interventions import init_intervention  # noqa: E402
from steerfront.methods.objectives import Objective, TrainSpec  # noqa: E402
from steerfront.methods.train import train  # noqa: E402
from steerfront.scoring.evaluate import evaluate  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"
NAMES = ("qwen2.5-7b", "llama3.1-8b", "gemma2-9b")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GB, MB = 1e9, 1e6


def load_config(name: str, overrides: list[str] | None = None):
    """The transformers config of a name in bench/configs (or a config.json path)."""
    from transformers import AutoConfig

    path = Path(name) if name.endswith(".json") else CONFIGS / f"{name}.json"
    fields = json.loads(path.read_text())
    for item in overrides or []:
        key, _, value = item.partition("=")
        fields[key] = json.loads(value)
    return AutoConfig.for_model(**fields)


def build_model(config, layers: int, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random-weight model of `config` cut to `layers`, built in place on `device` (no
    default initialisation: weights uniform with the configured std, norms neutral)."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:layers]
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()
    generator = torch.Generator(device=device).manual_seed(0)
    bound = config.initializer_range * 3**0.5  # uniform with std initializer_range
    gemma_norm = config.model_type.startswith("gemma")  # RMSNorm scales by (1 + weight)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.uniform_(-bound, bound, generator=generator)
            elif name.endswith("bias") or gemma_norm:
                p.zero_()
            else:
                p.fill_(1.0)
    model.eval().requires_grad_(False)
    return model


def random_pairs(
    vocab: int, n: int, prompt: int = 50, long: int = 20, shared: int = 8, seed: int = 0
) -> list[EncodedPair]:
    """`n` pairs of random token ids: prompts of about `prompt` tokens starting with the same
    `shared` tokens; half with 1-token completions, half with about `long` tokens."""
    g = torch.Generator().manual_seed(seed)

    def ids(k: int) -> tuple[int, ...]:
        return tuple(torch.randint(vocab, (k,), generator=g).tolist())

    def near(k: int) -> int:
        return max(1, k + int(torch.randint(-k // 10, k // 10 + 1, (1,), generator=g)))

    head = ids(shared)
    pairs = []
    for i in range(n):
        size = 1 if i % 2 == 0 else None
        pairs.append(
            EncodedPair(
                prompt=head + ids(near(prompt) - shared),
                positive=ids(size or near(long)),
                negative=ids(size or near(long)),
            )
        )
    return pairs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_reset() -> None:
    """Reset the process's peak RSS (VmHWM), so a phase's own peak can be read."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _rss_peak() -> int:
    """Peak RSS in bytes since the last reset (else since the start)."""
    peak = proc_bytes("/proc/self/status", "VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_now() -> int:
    return proc_bytes("/proc/self/status", "VmRSS") or 0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help=f"{', '.join(NAMES)} or a .json path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, help="decoder layers kept (CPU default 2)")
    parser.add_argument("--dtype", choices=DTYPES, help="default: bfloat16 on CUDA, else float32")
    parser.add_argument("--peak-flops", type=float, help="the device's peak FLOP/s")
    parser.add_argument("--pairs", type=int, help="pairs scored (CPU default 8, else 256)")
    parser.add_argument("--m-values", type=int, default=None, help="CPU default 2, else 8")
    parser.add_argument("--steps", type=int, default=2, help="training steps timed")
    parser.add_argument("--batch-size", type=int, help="training pairs per step (CPU 2, else 8)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=JSON")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cpu = device.type == "cpu"
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float32 if cpu else torch.bfloat16)
    config = load_config(args.config, args.override)
    full_layers = config.num_hidden_layers
    layers = min(args.layers or (2 if cpu else full_layers), full_layers)
    n_pairs = args.pairs or (8 if cpu else 256)
    k = args.m_values or (2 if cpu else 8)
    batch_size = args.batch_size or (2 if cpu else 8)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    started = time.perf_counter()
    model = build_model(config, layers, device, dtype)
    build_s = time.perf_counter() - started
    choose_kernel(model)
    lm = LM(model=model, tokenizer=None, spec=args.config)

    block = sum(p.numel() for p in lm.layers[0].parameters())  # per token, per layer
    head = model.get_output_embeddings().weight.numel()
    params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    per_param = torch.finfo(dtype).bits // 8
    weights = params * per_param
    weights_full = (params + (full_layers - layers) * block) * per_param

    pairs = random_pairs(config.vocab_size, n_pairs)
    grid = [float(x) for x in torch.linspace(-8, 8, k)] if k > 1 else [4.0]
    lora = init_intervention("lora", lm, 0, rank=4)
    with torch.no_grad():
        lora.params["B"].normal_(0, 1e-3)  # a change that is not zero

    # Warm up (kernels, allocator) on two pairs, then measure from a clean peak.
    evaluate(lm, pairs[:2], lora, grid[:1])
    _sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _rss_now()
        _rss_reset()

    started = time.perf_counter()
    evaluate(lm, pairs, lora, grid)
    _sync(device)
    eval_s = time.perf_counter() - started

    spec = TrainSpec(
        form="lora",
        layer=0,
        objective=Objective("split"),
        steps=args.steps,
        patience=0,
        batch_size=batch_size,
    )
    started = time.perf_counter()
    train(lm, pairs, spec)
    _sync(device)
    train_step_s = (time.perf_counter() - started) / args.steps

    if device.type == "cuda":
        trial = torch.cuda.max_memory_allocated(device) - base
        peak = torch.cuda.max_memory_allocated(device)
    else:
        trial = max(0, _rss_peak() - base)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    # steerfront's estimate of this run's peak (`trial_memory`): the weights, the LoRA's
    # optimizer state, a training step's activations (its pairs' add and sub rows at the
    # longest width); no cache and no CUDA context, which max_memory_allocated leaves out.
    width = max(len(p.prompt) + len(p.positive) + len(p.negative) for p in pairs)
    step = {"forms": ("lora",), "rank": 4, "tokens": 2 * batch_size * width, "width": width}
    estimate = trial_memory(config, dtype, 0, stored_layers=layers, **step)["total"] - CUDA_CONTEXT
    full_config = load_config(args.config, args.override)
    full_estimate = trial_memory(full_config, dtype, 0, **step)["total"] - CUDA_CONTEXT

    packed = sum(len(p.prompt) + len(p.positive) + len(p.negative) - 2 for p in pairs)
    scored = sum(len(p.positive) + len(p.negative) for p in pairs)
    tokens = k * packed
    flops = 2 * k * (packed * layers * block + scored * head)
    total = device_memory(device)
    per_trial = max(trial, 1)
    out = {
        "config": args.config,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "layers": layers,
        "layers_full": full_layers,
        "pairs": n_pairs,
        "m_values": k,
        "tokens": tokens,
        "build_s": round(build_s, 2),
        "eval_s": round(eval_s, 3),
        "tokens_per_s": round(tokens / eval_s, 1),
        "flops_per_s": float(f"{flops / eval_s:.4g}"),
        "train_step_s": round(train_step_s, 3),
        "train_batch_pairs": batch_size,
        "peak_memory_gb": round(peak / GB, 3),
        "estimate_gb": round(estimate / GB, 3),
        "weights_gb": round(weights / GB, 3),
        "memory_per_pair_mb": round(trial / n_pairs / MB, 2),
        "device_memory_gb": round(total / GB, 1),
        "trials_per_device": int(total // (weights + per_trial)),
        "trials_per_device_shared_weights": int(max(0, total - weights) // per_trial),
    }
    if args.peak_flops:
        out["peak_share"] = round(flops / eval_s / args.peak_flops, 4)
    if layers < full_layers:
        # Per layer (the head's share is left in eval_s: an upper bound on a layer's time);
        # the full-depth estimate scales the layers' time, training's stored activations and
        # the weights by the depth.
        scale = full_layers / layers
        out["per_layer"] = {
            "params": block,
            "weights_gb": round(block * per_param / GB, 3),
            "eval_s": round(eval_s / layers, 3),
            "train_step_s": round(train_step_s / layers, 3),
            "memory_per_pair_mb": round(trial / n_pairs / layers / MB, 2),
        }
        full_trial = per_trial * scale
        out["full_depth"] = {
            "weights_gb": round(weights_full / GB, 3),
            "estimate_gb": round(full_estimate / GB, 3),
            "tokens_per_s": round(tokens / (eval_s * scale), 1),
            "train_step_s": round(train_step_s * scale, 3),
            "trials_per_device": int(total // (weights_full + full_trial)),
        }
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
