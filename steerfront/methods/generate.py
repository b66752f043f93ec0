"""Answers with and without steering.

Many answers come from one batch: each row is one prompt at one strength `m` (the
intervention takes a per-row multiplier, and `m = 0` is exactly the unsteered model), prompts
left-padded, decoded with the KV cache. Greedy by default, so the difference between rows is
the steering. Sampling is seeded per row, from the seed, the prompt and how many rows before it
asked the same prompt at the same m: a row's answer does not depend on the rows batched with
it (how many fit follows the free memory), and rows that differ only in m draw the same
random numbers, so the steering is still the difference between them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from transformers import LogitsProcessor, LogitsProcessorList

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
    one batch (sampling seeded per row: `generate_rows`)."""
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
    (`memory.generation_rows`); with `temperature > 0` each row samples from its own
    generator (`row_seeds`), so the batches' cut changes no answer."""
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
    seeds = row_seeds(prompts, m, seed)
    for start in range(0, len(order), step):
        rows = order[start : start + step]
        ids, mask = pad_rows([encoded[i] for i in rows], pad, left=True)
        width = ids.shape[1]
        scale = torch.tensor([float(m[i]) for i in rows], device=lm.device)
        steering = intervention.attached(lm, m=scale) if intervention else nullcontext()
        sampling = {}
        if temperature > 0:  # the rows' own draws; the pick is then the only token left
            sampler = RowSampler([seeds[i] for i in rows], temperature)
            sampling = {"logits_processor": LogitsProcessorList([sampler])}
        with steering:
            tokens = lm.model.generate(
                input_ids=ids.to(lm.device),
                attention_mask=mask.to(lm.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                **sampling,
            )
        for r, i in enumerate(rows):
            out[i] = _decode(lm, tokens[r, width:].tolist())
    return out


def row_seeds(prompts: Sequence[str], m: Sequence[float], seed: int) -> list[int]:
    """Each row's sampling seed: from `seed`, its prompt and how many rows before it have the
    same prompt and m (the first answer to a prompt shares its draws with that prompt's other
    values of m; a repeated (prompt, m) row is another sample)."""
    seen: Counter = Counter()
    out = []
    for prompt, value in zip(prompts, m, strict=True):
        k = seen[prompt, float(value)]
        seen[prompt, float(value)] += 1
        digest = hashlib.sha256(f"{seed}\0{k}\0{prompt}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "little") >> 1)
    return out


class RowSampler(LogitsProcessor):
    """Samples every row's next token from its own seeded generator (softmax of the logits at
    `temperature`, by the inverse of its distribution function) and leaves that token alone
    possible, so that greedy decoding takes it. A row draws one number per step, whatever the
    other rows of its batch."""

    def __init__(self, seeds: Sequence[int], temperature: float) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
        cdf = probs.double().cumsum(-1)
        target = (u.to(cdf.device) * cdf[:, -1])[:, None]
        picked = torch.searchsorted(cdf, target, right=True).clamp_(max=scores.shape[-1] - 1)
        out = torch.full_like(scores, -torch.inf)
        return out.scatter_(1, picked, 0.0)


def _decode(lm: LM, tokens: list[int]) -> str:
    """An answer up to its first end-of-sequence token (a row that ends before the others is
    padded, and the pad may be an ordinary token)."""
    stops = lm.model.generation_config.eos_token_id
    if not isinstance(stops, list):
        stops = [lm.tokenizer.eos_token_id if stops is None else stops]
    end = next((i for i, token in enumerate(tokens) if token in stops), len(tokens))
    return lm.tokenizer.decode(tokens[:end], skip_special_tokens=True)
