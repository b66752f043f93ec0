"""The `local` judge: no network and no second model, only the unsteered model itself.

- fluency: `nll`, the per-token negative log-likelihood of the generation under the unsteered
  model, and `repetition`, the share of the generation's trigrams (of words, punctuation marks
  and line breaks) that already occurred in it (a loop is predictable, so its NLL is low:
  repetition catches it). `fluency` combines them as `exp(-nll) * (1 - repetition)`: the
  geometric-mean token probability, times the share of fresh trigrams (0 to 1, higher is
  better);
- concept: a logistic-regression probe on the unsteered model's activations (middle layer,
  averaged over the text's tokens), fitted on the concept's training completions, positive
  against negative; `concept` is its probability that a generation is positive. Its held-out
  accuracy is reported beside every concept score (`probe_accuracy`);
- instruction: the pointwise mutual information of the generation with its prompt, per token:
  `log p(generation | prompt) - log p(generation | empty prompt)`, in nats (0: the prompt does
  not matter; higher: the answer follows from its prompt).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from steerfront.batches import by_length, pad
from steerfront.data import PairSet, encode_pairs, render_prompt
from steerfront.lm import LM, fast_linear
from steerfront.memory import tokens_per_batch

PROBE_WARNING = 0.8  # a probe less accurate than this on held-out pairs is flagged
PROBE_HELD_OUT = 0.2  # share of training pairs held out to measure the probe
PROBE_L2 = 1e-2  # ridge penalty on the standardized features
NGRAM = 3  # n-grams counted for repetition
SCORES = ("concept", "fluency", "instruction", "nll", "repetition")


class LocalJudge:
    """Scores with the unsteered model `lm`; the concept probe is fitted at construction."""

    name = "local"

    def __init__(self, lm: LM, train: PairSet, seed: int = 0) -> None:
        self.lm = lm
        self.layer = lm.n_layers // 2
        encoded = encode_pairs(lm.tokenizer, train)
        contexts = [list(e.prompt) for e in encoded] * 2
        texts = [list(e.positive) for e in encoded] + [list(e.negative) for e in encoded]
        _, _, states = self._read(contexts, texts, with_states=True)
        labels = np.r_[np.ones(len(encoded)), np.zeros(len(encoded))]
        pairs = np.r_[np.arange(len(encoded)), np.arange(len(encoded))]
        self.probe = Probe.fit(states, labels, pairs, seed)

    @property
    def probe_accuracy(self) -> float:
        return self.probe.accuracy

    def score(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """Per (prompt, generation): concept, fluency, instruction, nll and repetition; an
        empty generation has none of them."""
        tok = self.lm.tokenizer
        templated = self.lm.chat_template is not None

        def context(prompt: str) -> list[int]:  # never empty: the text's first token needs one
            ids = tok(render_prompt(tok, prompt), add_special_tokens=not templated)["input_ids"]
            return ids or [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]

        texts = [tok(text, add_special_tokens=False)["input_ids"] for _, text in pairs]
        logp, counts, states = self._read([context(p) for p, _ in pairs], texts, True)
        null, _, _ = self._read([context("")] * len(pairs), texts, with_states=False)
        concept = self.probe.predict(states)
        out = []
        for i, (_, text) in enumerate(pairs):
            if counts[i] == 0:
                out.append(dict.fromkeys(SCORES))
                continue
            nll = float(-logp[i] / counts[i])
            repetition = repeated_share(text)
            out.append(
                {
                    "concept": float(concept[i]),
                    "fluency": math.exp(-nll) * (1 - repetition),
                    "instruction": float((logp[i] - null[i]) / counts[i]),
                    "nll": nll,
                    "repetition": repetition,
                }
            )
        return out

    @torch.no_grad()
    def _read(
        self, contexts: list[list[int]], texts: list[list[int]], with_states: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row, the summed log-probability of `texts[i]` after `contexts[i]`, its token
        count, and (`with_states`) the mean activation over its tokens at the probe layer."""
        lm = self.lm
        n = len(texts)
        logp, counts = np.zeros(n), np.array([len(t) for t in texts], dtype=float)
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
                picked = logits.gather(1, target[:, None])[:, 0] - logits.logsumexp(-1)
                logp[i] = float(picked.sum())
                if with_states:
                    hidden = out.hidden_states[self.layer + 1][r, a:b]
                    states[i] = hidden.float().mean(0).cpu().numpy()
        return logp, counts, states


@dataclass(eq=False)
class Probe:
    """Logistic regression on standardized activations (ridge-penalized, fitted by L-BFGS)."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: float
    accuracy: float = math.nan

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> Probe:
        """Fit on all but `PROBE_HELD_OUT` of the groups (a pair's two completions stay
        together) and measure accuracy on those held out."""
        ids = np.unique(groups)
        held = np.random.default_rng(seed).permutation(ids)[
            : max(1, int(len(ids) * PROBE_HELD_OUT))
        ]
        test = np.isin(groups, held)
        mean, scale = x[~test].mean(0), x[~test].std(0) + 1e-6
        features = torch.tensor((x[~test] - mean) / scale)
        targets = torch.tensor(y[~test])
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
        probe.accuracy = float(((probe.predict(x[test]) > 0.5) == (y[test] > 0.5)).mean())
        return probe

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The probability of the positive class, per row."""
        return 1 / (1 + np.exp(-(((x - self.mean) / self.scale) @ self.weight + self.bias)))


def repeated_share(text: str) -> float:
    """The share of `NGRAM`-grams of words, punctuation marks and line breaks that already
    occurred earlier in `text` (line breaks count, so a loop of empty lines is a loop)."""
    words = re.findall(r"\w+|[^\w\s]|\n", text.lower())
    grams = [tuple(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0
