"""Rendering pairs through the chat template and tokenizing them with exact spans.

The prompt is rendered as one user turn plus the generation prompt; a completion is appended as
the assistant's answer, without leading white space (an assistant turn starts on a fresh line, as
chat templates render it). Prompt and completions are tokenized separately, so the prompt's
tokens are shared by both completions and its span masks exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from steerfront.data.schema import PairSet


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair; a scored sequence is `prompt + positive` or `prompt + negative`."""

    prompt: tuple[int, ...]
    positive: tuple[int, ...]
    negative: tuple[int, ...]

    @property
    def prompt_span(self) -> tuple[int, int]:
        return 0, len(self.prompt)

    @property
    def positive_span(self) -> tuple[int, int]:
        return len(self.prompt), len(self.prompt) + len(self.positive)

    @property
    def negative_span(self) -> tuple[int, int]:
        return len(self.prompt), len(self.prompt) + len(self.negative)


def render_prompt(tokenizer: object, prompt: str) -> str:
    """The prompt as the model sees it before the answer (chat template when there is one)."""
    if not getattr(tokenizer, "chat_template", None):
        return prompt
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def encode_pairs(tokenizer: object, pairs: PairSet) -> list[EncodedPair]:
    """Tokenize every pair; templated prompts carry their own special tokens."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    prompts = tokenizer(
        [render_prompt(tokenizer, p.prompt) for p in pairs], add_special_tokens=not templated
    )["input_ids"]
    strip = str.lstrip if templated else str
    positives = tokenizer([strip(p.positive) for p in pairs], add_special_tokens=False)
    negatives = tokenizer([strip(p.negative) for p in pairs], add_special_tokens=False)
    return [
        EncodedPair(tuple(q), tuple(a), tuple(b))
        for q, a, b in zip(prompts, positives["input_ids"], negatives["input_ids"], strict=True)
    ]
