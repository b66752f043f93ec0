"""Answers with and without steering.

Many answers come from one batch: each row is one prompt at one strength `m` (the
intervention takes a per-row multiplier, and `m = 0` is exactly the unsteered model), prompts
left-padded, decoded with the KV cache. Greedy by default, so the difference between rows is
the steering; sampling is seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch

from steerfront.batches import pad as pad_rows
from steerfront.data import render_prompt
from steerfront.lm import LM
from steerfront.memory import generation_rows
from steerfront.methods.interventions import Intervention


def generate(
    lm: LM,
    prompt: str,
    intervention: Intervention,
    ms: Sequence[float],
    max_new_tokens: int = 60,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[str, list[str]]:
    """The unsteered answer and one steered answer per value in `ms`, to one user message, from
    one batch (seeded per prompt, so a prompt's answers do not depend on the prompts before it)."""
    rows = [0.0, *ms]
    texts = generate_rows(
        lm, [prompt] * len(rows), intervention, rows, max_new_tokens, temperature, seed
    )
    return texts[0], texts[1:]


@torch.no_grad()
def generate_rows(
    lm: LM,
    prompts: Sequence[str],
    intervention: Intervention | None,
    m: Sequence[float],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[str]:
    """One answer per row: to `prompts[i]`, steered at `m[i]` (unsteered without an
    intervention). Rows are batched by prompt length, as many as the free memory holds
    (`memory.generation_rows`)."""
    if len(prompts) != len(m):
        raise ValueError(f"{len(prompts)} prompts but {len(m)} values of m")
    templated = lm.chat_template is not None
    encoded = [
        lm.tokenizer(render_prompt(lm.tokenizer, p), add_special_tokens=not templated)["input_ids"]
        for p in prompts
    ]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    pad = lm.tokenizer.pad_token_id  # 0 is a real id: only a missing pad falls back to eos
    pad = lm.tokenizer.eos_token_id if pad is None else pad
    out: list[str] = [""] * len(prompts)
    length = max(map(len, encoded), default=0) + max_new_tokens
    step = generation_rows(lm.config, lm.dtype, lm.device, length)
    for start in range(0, len(order), step):
        rows = order[start : start + step]
        ids, mask = pad_rows([encoded[i] for i in rows], pad, left=True)
        width = ids.shape[1]
        scale = torch.tensor([float(m[i]) for i in rows], device=lm.device)
        steering = intervention.attached(lm, m=scale) if intervention else nullcontext()
        torch.manual_seed(seed + start)
        with steering:
            tokens = lm.model.generate(
                input_ids=ids.to(lm.device),
                attention_mask=mask.to(lm.device),
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                pad_token_id=pad,
                **({"temperature": temperature, "top_k": 0} if temperature > 0 else {}),
            )
        for r, i in enumerate(rows):
            out[i] = _decode(lm, tokens[r, width:].tolist())
    return out


def _decode(lm: LM, tokens: list[int]) -> str:
    """An answer up to its first end-of-sequence token (a row that ends before the others is
    padded, and the pad may be an ordinary token)."""
    stops = lm.model.generation_config.eos_token_id
    if not isinstance(stops, list):
        stops = [lm.tokenizer.eos_token_id if stops is None else stops]
    end = next((i for i, token in enumerate(tokens) if token in stops), len(tokens))
    return lm.tokenizer.decode(tokens[:end], skip_special_tokens=True)
