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

from steerfront.batches import by_length, pad
from steerfront.data import PairSet, encode_pairs, instructed, render_prompt
from steerfront.defaults import concept_instruction
from steerfront.lm import LM, fast_linear
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
    """Scores with the unsteered model `lm`; the concept probe is fitted at construction, on
    the training completions and on `examples` (`probe_examples`), and measured on the
    examples of held-out prompts (without examples: on held-out training pairs)."""

    name = "local"

    def __init__(
        self, lm: LM, train: PairSet, seed: int = 0, examples: list[dict] | None = None
    ) -> None:
        self.lm = lm
        self.layer = lm.n_layers // 2
        self.ngram = token_ngram(lm.tokenizer)
        encoded = encode_pairs(lm.tokenizer, train)
        contexts = [list(e.prompt) for e in encoded] * 2
        texts = [list(e.positive) for e in encoded] + [list(e.negative) for e in encoded]
        labels = [1.0] * len(encoded) + [0.0] * len(encoded)
        groups = [p.prompt for p in train] * 2
        generated = [False] * len(texts)
        for example in examples or []:
            ids = self._text(example["text"])
            if ids:  # an empty answer teaches nothing
                contexts.append(self._context(example["prompt"]))
                texts.append(ids)
                labels.append(1.0 if example["polarity"] == "+" else 0.0)
                groups.append(example["prompt"])
                generated.append(True)
        states = self._read(contexts, texts, with_states=True)[2]
        generated = np.array(generated)
        # held out: prompts, not rows (a prompt's answers and completions stay together)
        pool = list(dict.fromkeys(g for g, gen in zip(groups, generated, strict=True) if gen))
        if not pool:
            pool = list(dict.fromkeys(groups))
        order = np.random.default_rng(seed).permutation(len(pool))
        held = {pool[i] for i in order[: max(1, int(len(pool) * PROBE_HELD_OUT))]}
        test = np.array([g in held for g in groups])
        measured = test & generated if generated.any() else test
        self.probe = Probe.fit(states, np.array(labels), ~test, measured)
        self.probe_held_out = int(measured.sum())  # rows the accuracy is measured on
        self.probe_on = "generations" if generated.any() else "training pairs"

    @property
    def probe_accuracy(self) -> float:
        return self.probe.accuracy

    def _context(self, prompt: str) -> list[int]:
        """The rendered prompt's ids; never empty: the text's first token needs one."""
        tok = self.lm.tokenizer
        templated = self.lm.chat_template is not None
        ids = tok(render_prompt(tok, prompt), add_special_tokens=not templated)["input_ids"]
        return ids or [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]

    def _text(self, text: str) -> list[int]:
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    def score(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """Per (prompt, generation): concept, fluency, instruction, nll, pmi and repetition;
        an empty generation has none of them."""
        texts = [self._text(text) for _, text in pairs]
        read = self._read([self._context(p) for p, _ in pairs], texts, True)
        logp, plausible, states = read
        null = self._read([self._context("")] * len(pairs), texts, with_states=False)[0]
        concept = self.probe.predict(states)
        out = []
        for i, (_, text) in enumerate(pairs):
            if not len(texts[i]):
                out.append(dict.fromkeys(SCORES))
                continue
            repeated = repetition(text, texts[i], self.ngram)
            gain = logp[i] - null[i]  # per token: how much the prompt raised its log-probability
            plausibility = min(1.0, float(plausible[i].mean()) / FLUENT_SHARE)
            out.append(
                {
                    "concept": float(concept[i]),
                    "fluency": plausibility * (1 - repeated),
                    "instruction": float((gain > 0).mean()),
                    "nll": float(-logp[i].mean()),
                    "plausibility": plausibility,
                    "pmi": float(gain.mean()),
                    "repetition": repeated,
                }
            )
        return out

    @torch.no_grad()
    def _read(
        self, contexts: list[list[int]], texts: list[list[int]], with_states: bool
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Per row, for each token of `texts[i]` after `contexts[i]`: its log-probability and
        whether it is among the model's `TOP_K` likeliest next tokens; and (`with_states`) the
        mean activation over its tokens at the probe layer."""
        lm = self.lm
        n = len(texts)
        logp = [np.zeros(0) for _ in range(n)]
        plausible = [np.zeros(0, dtype=bool) for _ in range(n)]
        states = np.zeros((n, lm.hidden_size))
        lengths = [len(c) + len(t) for c, t in zip(contexts, texts, strict=True)]
        # with_states keeps every layer's hidden state of every token
        kept = (lm.n_layers + 1) * lm.hidden_size * lm.dtype.itemsize if with_states else 0
        width = max(lengths, default=1)
        tokens = tokens_per_batch(lm.config, lm.dtype, lm.device, width, kept=kept)
        for rows in by_length(lengths, tokens):
            ids, mask = pad([contexts[i] + texts[i] for i in rows])
            with fast_linear():
                out = lm.model.model(
                    input_ids=ids.to(lm.device),
                    attention_mask=mask.to(lm.device),
                    output_hidden_states=with_states,
                    use_cache=False,
                )
            for r, i in enumerate(rows):
                a, b = len(contexts[i]), lengths[i]
                if a == b:
                    continue
                target = ids[r, a:b].to(lm.device)
                logits = lm.head(out.last_hidden_state[r, a - 1 : b - 1]).float()
                logits = logits.log_softmax(-1)
                picked = logits.gather(1, target[:, None])
                top = logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).values
                logp[i] = picked[:, 0].cpu().double().numpy()
                plausible[i] = (picked[:, 0] >= top[:, -1]).cpu().numpy()
                if with_states:
                    hidden = out.hidden_states[self.layer + 1][r, a:b]
                    states[i] = hidden.float().mean(0).cpu().numpy()
        return logp, plausible, states


@dataclass(eq=False)
class Probe:
    """Logistic regression on standardized activations (ridge-penalized, fitted by L-BFGS)."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: float
    accuracy: float = math.nan

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
