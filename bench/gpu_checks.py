"""The correctness half of the GPU check (issue #16): the evaluator on a device, against the
model's own forward, in fp32 and bf16, and bf16 against fp32.

Cut-down Qwen2.5, Llama-3.1 and Gemma-2 (bench/configs, 4 layers of width 64, random weights;
Gemma-2 with a sliding window of 8 positions, far shorter than the pairs, and weights at ten
times the usual scale so that its soft-caps bite) score random token pairs through the packed,
frozen-prefix path with the shared prompt, unsteered and with a LoRA at layer 1. Per model it
prints the largest difference (nats, summed over a completion) from the stock forward
(`reference_nll`) in fp32 and in bf16, and the largest bf16-vs-fp32 difference in pref_odds and
util_odds on the same weights (tests/conftest.py states the bound the tests hold: 0.1). One
JSON line; seconds on a GPU or a CPU, with only torch, transformers and peft installed.

    python bench/gpu_checks.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import NAMES, build_model, load_config, random_pairs  # noqa: E402

from steerfront.lm import LM  # noqa: E402
from steerfront.methods.interventions import init_intervention  # noqa: E402
from steerfront.scoring.evaluate import evaluate  # noqa: E402
from steerfront.scoring.reference import reference_nll  # noqa: E402

SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 512,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
# Weights at ten times the usual scale: attention scores and logits large enough for the caps.
GEMMA2 = {
    "sliding_window": 8,
    "query_pre_attn_scalar": 16,
    "attn_logit_softcapping": 2.0,
    "final_logit_softcapping": 2.0,
    "initializer_range": 0.3,
}


def check(name: str, device: torch.device) -> dict:
    """One cut-down model's figures: built in fp32, then the same weights cast to bf16."""
    overrides = {**SMALL, **(GEMMA2 if name.startswith("gemma2") else {})}
    config = load_config(name, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    model = build_model(config, 4, device, torch.float32)
    pairs = random_pairs(SMALL["vocab_size"], 6, prompt=30, long=12, shared=4)
    scores, stock = {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        lm = LM(model=model.to(dtype), tokenizer=None, spec=name)
        lora = init_intervention("lora", lm, 1, rank=2)
        lora.params["B"].normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
        for label, intervention, m in (("unsteered", None, 0.0), ("lora", lora, 1.5)):
            got = scores[dtype, label] = evaluate(lm, pairs, intervention, m)
            with intervention.attached(lm, m=m) if intervention else nullcontext():
                want = [
                    [reference_nll(lm, p, positive) for positive in (True, False)] for p in pairs
                ]
            diff = float(np.abs(np.stack([got.l_p, got.l_n], 1) - np.array(want)).max())
            stock[dtype] = max(stock.get(dtype, 0.0), diff)
    bf16_vs_fp32 = max(
        float(
            np.abs(
                getattr(scores[torch.bfloat16, label], part)
                - getattr(scores[torch.float32, label], part)
            ).max()
        )
        for label in ("unsteered", "lora")
        for part in ("pref", "util")
    )
    return {
        "stock_fp32": float(f"{stock[torch.float32]:.2g}"),
        "stock_bf16": round(stock[torch.bfloat16], 4),
        "bf16_vs_fp32": round(bf16_vs_fp32, 4),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    out = {"check": "correctness", "device": str(device)}
    out.update({name: check(name, device) for name in NAMES})
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
