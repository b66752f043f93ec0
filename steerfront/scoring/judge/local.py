"""The `local` judge: no network and no second model, only the unsteered model itself.

- fluency: `plausibility * (1 - repetition)`. `plausibility` is the share of the generation's
  tokens among the unsteered model's `TOP_K` likeliest next tokens, over `FLUENT_SHARE`,
  capped at 1: text the model finds plausible token by token scores 1 whether or not it is
  the model's own greedy answer (the per-token likelihood `exp(-nll)` favoured that answer by
  construction). A loop is plausible token by token (the model copies its own context), so
  `repetition` catches it: the larger of two shares of n-grams that already occurred in the
  generation, one over its words, punctuation marks and line breaks (trigrams), one over its
  token ids (`repetition`). Words alone miss a loop inside one long "word": steered text like
  "Yesnonohkininininininininhkininininhkinininhk..." has no word trigram at all but mostly
  repeated token trigrams. Tokens alone miss a loop the tokenizer merges: a run of line breaks
  is a few tokens but many word-level units. Fluent prose repeats neither (on the default model,
  human-written answers about 0.003, the unsteered model's loop-free answers under 0.07). The
  token n-gram spans about `NGRAM` words of plain English (`token_ngram`): 3 tokens on a
  subword tokenizer, more on a byte-level one, whose trigrams are letter trigrams that every
  text repeats. `nll` is kept beside them;
- concept: a logistic-regression probe on the unsteered model's activations (middle layer,
  averaged over the text's tokens), fitted on labelled text like what it judges: the unsteered
  model's answers to training prompts when asked to express the concept and its opposite
  (`probe_examples`), and the training completions; `concept` is its probability that a
  generation is positive. Its accuracy on the answers to held-out prompts is reported beside
  every concept score (`probe_accuracy`);
- instruction: the share of the generation's tokens whose log-probability the prompt raises
  (`log p(token | prompt, ...) > log p(token | empty prompt, ...)`; 0.5: the prompt does not
  matter); `pmi`, the per-token mean of that log-ratio in nats, is kept beside it. A share,
  unlike the mean, does not rank the greedy answer (which maximises `log p(text | prompt)`)
  above every other answer by construction.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from steerfront.batches import by_length, pad
from steerfront.data import PairSet, encode_pairs, instructed, render_prompt
from steerfront.defaults import concept_instruction
from steerfront.lm import LM, StopForward, fast_linear
from steerfront.memory import tokens_per_batch

PROBE_WARNING = 0.8  # a probe less accurate than this on held-out generations is flagged
PROBE_PROMPTS = 24  # training prompts the unsteered model answers both ways for the probe
PROBE_NEW_TOKENS = 48  # the length of those answers
PROBE_HELD_OUT = 0.25  # share of those prompts held out to measure the probe
PROBE_L2 = 1e-2  # ridge penalty on the standardized features
TOP_K = 50  # a token is plausible when it is among the unsteered model's TOP_K likeliest
FLUENT_SHARE = 0.9  # text with at least this share of plausible tokens reads as fluent
NGRAM = 3  # word n-grams counted for repetition; token n-grams span as many words
REFERENCE = (  # plain English prose: how many tokens a word takes with a tokenizer
    "The weather was mild this morning, so I walked to the station instead of taking the bus. "
    "On the way I stopped at a small bakery, bought a loaf of bread and talked with the owner "
    "about her new recipes. The train was late, but I finished a chapter of my book while I "
    "waited."
)
SCORES = ("concept", "fluency", "instruction", "nll", "plausibility", "pmi", "repetition")


def probe_prompts(train: PairSet, seed: int = 0) -> list[str]:
    """Up to `PROBE_PROMPTS` of the training prompts, each once, in a seeded order."""
    prompts = list(dict.fromkeys(p.prompt for p in train))
    order = np.random.default_rng(seed).permutation(len(prompts))
    return [prompts[i] for i in order[:PROBE_PROMPTS]]


def probe_examples(lm: LM, train: PairSet, concept: str, seed: int = 0) -> list[dict]:
    """Labelled examples like the text the judge reads: the unsteered model answers training
    prompts asked to express the concept (`polarity` "+") and its opposite ("-")
    (`concept_instruction`; `concept` is a built-in name or the concept in words), greedily,
    `PROBE_NEW_TOKENS` tokens each. Each `{"prompt", "polarity", "text"}`: `prompt` without the
    instruction, as the judge will read the text."""
    from steerfront.methods.generate import generate_rows

    rows = [(p, polarity) for p in probe_prompts(train, seed) for polarity in "+-"]
    asks = [instructed(p, concept_instruction(concept, polarity)) for p, polarity in rows]
    texts = generate_rows(lm, asks, None, [0.0] * len(asks), PROBE_NEW_TOKENS, 0.0, seed)
    return [
        {"prompt": p, "polarity": polarity, "text": text}
        for (p, polarity), text in zip(rows, texts, strict=True)
    ]


class LocalJudge:
    """Scores with the unsteered model `lm` (`Reader`); the concept probe is fitted at
    construction (`fit_probe`), on the training completions and on `examples`
    (`probe_examples`)."""

    name = "local"

    def __init__(
        self, lm: LM, train: PairSet, seed: int = 0, examples: list[dict] | None = None
    ) -> None:
        self.reader = Reader(lm)
        examples = examples or []
        self.probe = fit_probe(train, examples, self.reader.states(train, examples), seed)

    def score(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """Per (prompt, generation): every score of `SCORES`; an empty generation has none."""
        return with_concept(self.reader.read(pairs), self.probe)


class Reader:
    """The local judge's model side: what the unsteered model `lm` reads in a text. Kept apart
    from the probe's fit so that a judge pass's texts are read in several workers at once
    (`judged`) and the probe fitted once, from their activations, where they are gathered."""

    def __init__(self, lm: LM) -> None:
        self.lm = lm
        self.layer = lm.n_layers // 2
        self.ngram = token_ngram(lm.tokenizer)

    def _context(self, prompt: str) -> list[int]:
        """The rendered prompt's ids; never empty: the text's first token needs one."""
        tok = self.lm.tokenizer
        templated = self.lm.chat_template is not None
        ids = tok(render_prompt(tok, prompt), add_special_tokens=not templated)["input_ids"]
        return ids or [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]

    def _text(self, text: str) -> list[int]:
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    def read(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """Per (prompt, generation): every score but `concept`, and `state` (the probe
        layer's mean activation over its tokens, for `Probe.predict`); an empty generation
        has none of them."""
        texts = [self._text(text) for _, text in pairs]
        logp, plausible, states = self._read([self._context(p) for p, _ in pairs], texts, True)
        null = self._read([self._context("")] * len(pairs), texts, with_logits=True)[0]
        out = []
        for i, (_, text) in enumerate(pairs):
            if not len(texts[i]):
                out.append({**dict.fromkeys(SCORES), "state": None})
                continue
            repeated = repetition(text, texts[i], self.ngram)
            gain = logp[i] - null[i]  # per token: how much the prompt raised its log-probability
            plausibility = min(1.0, float(plausible[i].mean()) / FLUENT_SHARE)
            out.append(
                {
                    "fluency": plausibility * (1 - repeated),
                    "instruction": float((gain > 0).mean()),
                    "nll": float(-logp[i].mean()),
                    "plausibility": plausibility,
                    "pmi": float(gain.mean()),
                    "repetition": repeated,
                    "state": states[i],
                }
            )
        return out

    def states(self, train: PairSet, examples: list[dict]) -> np.ndarray:
        """The probe's inputs (`fit_probe`): the probe layer's mean activation over each
        training completion (positives, then negatives) and each example's text (NaN for an
        empty one), read only up to that layer."""
        encoded = encode_pairs(self.lm.tokenizer, train)
        contexts = [list(e.prompt) for e in encoded] * 2
        texts = [list(e.positive) for e in encoded] + [list(e.negative) for e in encoded]
        for example in examples:
            contexts.append(self._context(example["prompt"]))
            texts.append(self._text(example["text"]))
        states = self._read(contexts, texts, with_logits=False)[2]
        states[[not t for t in texts]] = np.nan
        return states

    @torch.no_grad()
    def _read(
        self, contexts: list[list[int]], texts: list[list[int]], with_logits: bool
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Per row, for each token of `texts[i]` after `contexts[i]`: (`with_logits`) its
        log-probability and whether it is among the model's `TOP_K` likeliest next tokens;
        and the mean activation over its tokens at the probe layer (without logits, the
        forward stops there)."""
        lm = self.lm
        n = len(texts)
        logp = [np.zeros(0) for _ in range(n)]
        plausible = [np.zeros(0, dtype=bool) for _ in range(n)]
        states = np.zeros((n, lm.hidden_size))
        lengths = [len(c) + len(t) for c, t in zip(contexts, texts, strict=True)]
        width = max(lengths, default=1)
        tokens = tokens_per_batch(lm.config, lm.dtype, lm.device, width)
        for rows in by_length(lengths, tokens):
            ids, mask = pad([contexts[i] + texts[i] for i in rows])
            hidden, last = self._forward(ids.to(lm.device), mask.to(lm.device), with_logits)
            for r, i in enumerate(rows):
                a, b = len(contexts[i]), lengths[i]
                if a == b:
                    continue
                states[i] = hidden[r, a:b].float().mean(0).cpu().numpy()
                if not with_logits:
                    continue
                target = ids[r, a:b].to(lm.device)
                logits = lm.head(last[r, a - 1 : b - 1]).float().log_softmax(-1)
                picked = logits.gather(1, target[:, None])
                top = logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).values
                logp[i] = picked[:, 0].cpu().double().numpy()
                plausible[i] = (picked[:, 0] >= top[:, -1]).cpu().numpy()
        return logp, plausible, states

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, to_the_end: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The probe layer's output and (`to_the_end`) the last hidden state; without the
        latter, the layers above the probe's never run."""
        captured: list[torch.Tensor] = []

        def grab(_module: nn.Module, _args: tuple, out: object) -> None:
            captured.append(out[0] if isinstance(out, tuple) else out)
            if not to_the_end:
                raise StopForward

        handle = self.lm.layers[self.layer].register_forward_hook(grab)
        try:
            with fast_linear():
                out = self.lm.model.model(input_ids=ids, attention_mask=mask, use_cache=False)
        except StopForward:
            out = None
        finally:
            handle.remove()
        return captured[0], None if out is None else out.last_hidden_state


@dataclass(eq=False)
class Probe:
    """Logistic regression on standardized activations (ridge-penalized, fitted by L-BFGS)."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: float
    accuracy: float = math.nan
    held_out: int = 0  # rows the accuracy is measured on
    on: str = "training pairs"  # what those rows are: "generations" or "training pairs"

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, fit: np.ndarray, test: np.ndarray) -> Probe:
        """Fit on the rows `fit` (a mask) and measure accuracy on the rows `test`."""
        mean, scale = x[fit].mean(0), x[fit].std(0) + 1e-6
        features = torch.tensor((x[fit] - mean) / scale)
        targets = torch.tensor(y[fit])
        weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            optimizer.zero_grad()
            value = (
                torch.nn.functional.binary_cross_entropy_with_logits(
                    features @ weight + bias, targets
                )
                + PROBE_L2 * (weight**2).sum()
            )
            value.backward()
            return value

        optimizer.step(loss)
        probe = cls(mean, scale, weight.detach().numpy(), float(bias.detach()))
        if test.any():
            probe.accuracy = float(((probe.predict(x[test]) > 0.5) == (y[test] > 0.5)).mean())
        return probe

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The probability of the positive class, per row."""
        return 1 / (1 + np.exp(-(((x - self.mean) / self.scale) @ self.weight + self.bias)))


def fit_probe(train: PairSet, examples: list[dict], states: np.ndarray, seed: int = 0) -> Probe:
    """The concept probe, fitted on `states` (`Reader.states`: the training completions, then
    `examples`) and measured on the examples of held-out prompts (without examples: on
    held-out training pairs). Held out are prompts, not rows: a prompt's answers and
    completions stay together."""
    labels = [1.0] * len(train) + [0.0] * len(train)
    labels += [1.0 if e["polarity"] == "+" else 0.0 for e in examples]
    groups = [p.prompt for p in train] * 2 + [e["prompt"] for e in examples]
    generated = np.array([False] * 2 * len(train) + [True] * len(examples))
    kept = ~np.isnan(states).any(1)  # an empty answer teaches nothing
    generated &= kept
    pool = list(dict.fromkeys(g for g, gen in zip(groups, generated, strict=True) if gen))
    if not pool:
        pool = list(dict.fromkeys(groups))
    order = np.random.default_rng(seed).permutation(len(pool))
    held = {pool[i] for i in order[: max(1, int(len(pool) * PROBE_HELD_OUT))]}
    test = np.array([g in held for g in groups])
    measured = (test & generated if generated.any() else test) & kept
    x = np.where(kept[:, None], states, 0.0)
    probe = Probe.fit(x, np.array(labels), ~test & kept, measured)
    probe.held_out = int(measured.sum())
    probe.on = "generations" if generated.any() else "training pairs"
    return probe


def with_concept(readings: list[dict], probe: Probe) -> list[dict]:
    """`Reader.read`'s scores with the probe's `concept` added (and `state` dropped)."""
    out = []
    for reading in readings:
        scores = {k: v for k, v in reading.items() if k != "state"}
        state = reading["state"]
        scores["concept"] = None if state is None else float(probe.predict(state[None])[0])
        out.append(scores)
    return out


def words(text: str) -> list[str]:
    """`text`'s words, punctuation marks and line breaks, lower-cased (line breaks count, so a
    loop of empty lines is a loop)."""
    return re.findall(r"\w+|[^\w\s]|\n", text.lower())


def repeated_share(units: Sequence[Hashable], n: int = NGRAM) -> float:
    """The share of `units`' `n`-grams that already occurred earlier in them."""
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def repetition(text: str, ids: Sequence[int], n: int) -> float:
    """The larger of the repeated shares of `text`'s word trigrams and of its token ids'
    `n`-grams: a loop inside one long "word" has no repeated word, a run of line breaks few
    tokens (see the module's docstring)."""
    return max(repeated_share(words(text)), repeated_share(ids, n))


def token_ngram(tokenizer: object) -> int:
    """The token n-gram as long as `NGRAM` words of plain English (`REFERENCE`) under
    `tokenizer`, at least `NGRAM`: 3 on a subword tokenizer (about a token a word), about 13
    on a byte-level one."""
    ids = tokenizer(REFERENCE, add_special_tokens=False)["input_ids"]
    return max(NGRAM, round(NGRAM * len(ids) / len(words(REFERENCE))))
