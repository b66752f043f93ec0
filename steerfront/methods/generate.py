"""Answers with and without steering, side by side.

One prompt's answers come from one batch whose rows differ only in `m` (the intervention takes
a per-row multiplier): row 0 at m = 0 is the unsteered model, the rest are the steered ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steerfront.data import render_prompt
from steerfront.lm import LM
from steerfront.methods.interventions import Intervention


@torch.no_grad()
def generate(
    lm: LM,
    prompt: str,
    intervention: Intervention,
    ms: Sequence[float],
    max_new_tokens: int = 60,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[str, list[str]]:
    """The unsteered answer and one steered answer per value in `ms`, to one user message.

    Greedy at `temperature` 0 (so the difference is the steering); otherwise sampled, seeded
    per prompt, so a prompt's answers do not depend on the prompts before it.
    """
    inputs = lm.tokenizer(
        render_prompt(lm.tokenizer, prompt),
        return_tensors="pt",
        add_special_tokens=lm.chat_template is None,
    ).to(lm.device)
    rows = len(ms) + 1
    m = torch.tensor([0.0, *ms], dtype=torch.float32, device=lm.device)
    pad = lm.tokenizer.pad_token_id  # 0 is a real id: only a missing pad falls back to eos
    sampling = {"temperature": temperature} if temperature > 0 else {}
    torch.manual_seed(seed)
    with intervention.attached(lm, m=m):
        out = lm.model.generate(
            input_ids=inputs["input_ids"].expand(rows, -1),
            attention_mask=inputs["attention_mask"].expand(rows, -1),
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            pad_token_id=lm.tokenizer.eos_token_id if pad is None else pad,
            **sampling,
        )
    texts = [_decode(lm, row) for row in out[:, inputs["input_ids"].shape[1] :].tolist()]
    return texts[0], texts[1:]


def _decode(lm: LM, tokens: list[int]) -> str:
    """An answer up to its first end-of-sequence token (a row that ends before the others is
    padded, and the pad may be an ordinary token)."""
    stops = lm.model.generation_config.eos_token_id
    if not isinstance(stops, list):
        stops = [lm.tokenizer.eos_token_id if stops is None else stops]
    end = next((i for i, token in enumerate(tokens) if token in stops), len(tokens))
    return lm.tokenizer.decode(tokens[:end], skip_special_tokens=True)
