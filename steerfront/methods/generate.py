"""Answers with and without steering, side by side (greedy, so the difference is the steering)."""

from __future__ import annotations

import torch

from steerfront.data import render_prompt
from steerfront.lm import LM
from steerfront.methods.interventions import Intervention


@torch.no_grad()
def generate(
    lm: LM, prompt: str, intervention: Intervention, m: float, max_new_tokens: int = 60
) -> tuple[str, str]:
    """The unsteered answer and the answer steered at `m`, to one user message."""
    inputs = lm.tokenizer(
        render_prompt(lm.tokenizer, prompt),
        return_tensors="pt",
        add_special_tokens=lm.chat_template is None,
    ).to(lm.device)
    unsteered = _answer(lm, inputs, max_new_tokens)
    with intervention.attached(lm, m=m):
        steered = _answer(lm, inputs, max_new_tokens)
    return unsteered, steered


def _answer(lm: LM, inputs: dict, max_new_tokens: int) -> str:
    pad = lm.tokenizer.pad_token_id  # 0 is a real id: only a missing pad falls back to eos
    out = lm.model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=lm.tokenizer.eos_token_id if pad is None else pad,
    )
    return lm.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
