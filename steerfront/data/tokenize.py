"""Rendering pairs through the chat template and tokenizing them with exact spans.

The prompt is rendered as one user turn plus the generation prompt; a completion is appended as
the assistant's answer, without leading white space (an assistant turn starts on a fresh line, as
chat templates render it). Prompt and completions are tokenized separately, so the prompt's
tokens are shared by both completions and its span masks exactly. With `end_of_turn`, each
completion is followed by the token that ends an assistant turn, so the score is that of a
finished answer rather than of one that may go on ("Yes" versus "Yes, but...").
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateError

from steerfront.data.schema import PairSet
from steerfront.errors import SteerfrontError

# An answer no chat template alters, to find what a template puts after an assistant message.
_PROBE = "Probe42"


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


def end_of_turn_tokens(tokenizer: object) -> tuple[int, ...]:
    """The tokens that end an assistant answer: what the chat template renders after it, up to
    and including its first special token (what generation stops at; the newline some templates
    put between turns follows the end and is not part of the answer), else the eos token."""
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    if not getattr(tokenizer, "chat_template", None):
        if tokenizer.eos_token_id is None:
            raise SteerfrontError(f"{name}: no chat template and no eos token to end an answer")
        return (tokenizer.eos_token_id,)
    head = render_prompt(tokenizer, "Hi") + _PROBE
    answered = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        full = tokenizer.apply_chat_template(answered, tokenize=False)
    except TemplateError as error:
        raise SteerfrontError(
            f"{name}: chat template renders no assistant turn ({error})"
        ) from None
    tail = full[len(head) :] if full.startswith(head) else ""
    tokens = tokenizer(tail, add_special_tokens=False)["input_ids"]
    added = tokenizer.added_tokens_decoder.items()
    special = set(tokenizer.all_special_ids) | {i for i, t in added if t.special}
    end = next((i for i, t in enumerate(tokens) if t in special), None)
    if end is None:
        raise SteerfrontError(
            f"{name}: its chat template shows no end-of-turn token after an answer"
        )
    return tuple(tokens[: end + 1])


def encode_pairs(tokenizer: object, pairs: PairSet, end_of_turn: bool = False) -> list[EncodedPair]:
    """Tokenize every pair; templated prompts carry their own special tokens. With
    `end_of_turn`, each completion ends with `end_of_turn_tokens` (it is scored as a whole
    answer)."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    prompts = tokenizer(
        [render_prompt(tokenizer, p.prompt) for p in pairs], add_special_tokens=not templated
    )["input_ids"]
    strip = str.lstrip if templated else str
    positives = tokenizer([strip(p.positive) for p in pairs], add_special_tokens=False)
    negatives = tokenizer([strip(p.negative) for p in pairs], add_special_tokens=False)
    end = end_of_turn_tokens(tokenizer) if end_of_turn else ()
    return [
        EncodedPair(tuple(q), tuple(a) + end, tuple(b) + end)
        for q, a, b in zip(prompts, positives["input_ids"], negatives["input_ids"], strict=True)
    ]
