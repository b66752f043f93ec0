"""kl: how far steering moves the model's next-token distributions on neutral text.

`kl` is the mean per-token KL(unsteered ‖ steered) over the unsteered model's own answers to
neutral instructions (`steerfront.data.prompts`), with a percentile-bootstrap interval over
prompts; `kl_first` is the same at the first answer token only (what heretic and its peers
report: `kl_div(steered, unsteered)` of the first answer token's log-softmax). Both use the full
vocabulary, in nats.

The unsteered answers are generated once per (model, prompts, length, seed, temperature):
greedy by default, kept on disk in steerfront's cache folder under a fingerprint of all of
these (`unsteered_answers`). A trial never generates: `kl_scores` scores its whole m-grid on
those answers teacher-forced, through the evaluator's fast path. The stream entering the
intervention's first layer is computed once per (answer set, layer) and kept in a
`MemoryCache` (the frozen prefix); the prompt tokens every prompt starts with (the chat
template's system turn) run once per m; one batch holds every m as a per-row multiplier; the
head runs only at answer positions.

The unsteered distributions: full-vocabulary log-probs of 20 answers of 48 tokens on a 49k
vocabulary are 190 MB in fp32 (570 MB for 60 prompts), and top-k would not be exact. They are
computed once per answer set and kept as logits when small (`KEPT_LOGITS_BYTES`: the default
16 scored tokens a trial takes, 63 MB), else as the unsteered model's final-normed states at
the answer positions (width 576: 2.2 MB for 20 answers of 48 tokens), on which each call runs
the head beside the steered rows, chunk by chunk (`kl_from_logits`), so that no
vocabulary-wide table is held for more than a few rows. Either way no decoder layer runs
again for the unsteered model (an m = 0 row in the batch would run every layer above the
intervention again).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers

from steerfront.data import instructed, render_prompt
from steerfront.defaults import KL_NEW_TOKENS, KL_TOKENS
from steerfront.errors import SteerfrontError
from steerfront.files import cache_dir, write_atomic
from steerfront.forward import (
    LOGITS_PER_CHUNK,
    PackedBatch,
    SharedPrompt,
    frozen_prefix,
    shared_prompt_length,
)
from steerfront.lm import LM
from steerfront.memory import MemoryCache, generation_rows, tokens_per_batch
from steerfront.methods.interventions import Intervention, check_fits
from steerfront.scoring.evaluate import check_grid
from steerfront.scoring.logodds import bootstrap_interval

_FORMAT = 1  # bump when the cached answers' layout or meaning changes
METRICS = ("kl", "kl_first")
# The unsteered logits at every scored position are kept (in the worker's cache) when they
# take at most this many bytes: 20 answers of 16 tokens on a 49k vocabulary take 63 MB, and a
# trial scoring one value of m then runs the head once per position rather than twice (about
# 15% of its kl time on the default model). Larger sets keep the final-normed states instead
# (2.2 MB for 20 answers of 48 tokens) and run the head on them in every call.
KEPT_LOGITS_BYTES = 128 << 20
# `_kl`: past this rise of a logit (nats), e^rise summed over a vocabulary nears fp32's range.
_EXPM1_LIMIT = 30.0


@dataclass(frozen=True)
class NeutralAnswers:
    """The unsteered model's answers to neutral prompts, as token ids: each answer ends with
    its end-of-sequence token if it stopped before the limit (that token is scored too)."""

    prompts: tuple[str, ...]
    prompt_ids: tuple[tuple[int, ...], ...]
    answer_ids: tuple[tuple[int, ...], ...]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.prompts)

    def texts(self, tokenizer: object) -> list[str]:
        """The answers as text (special tokens dropped)."""
        return [tokenizer.decode(list(a), skip_special_tokens=True) for a in self.answer_ids]


@dataclass(frozen=True)
class KLScores:
    """Per prompt and value of m: `kl` (mean over the answer's scored tokens) and `kl_first`
    (its first token), in nats; `tokens` is how many tokens of each answer were scored."""

    m: np.ndarray  # (k,)
    kl: np.ndarray  # (prompts, k)
    kl_first: np.ndarray  # (prompts, k)
    tokens: np.ndarray  # (prompts,)

    def metrics(self, seed: int = 0) -> dict[float, dict[str, float]]:
        """Per m: `kl` and `kl_first`, means over prompts (each prompt weighs the same), with
        their bootstrap intervals over prompts (`_lo`, `_hi`; `logodds.bootstrap_interval`,
        the same draws for every column)."""
        k = len(self.m)
        low, high = bootstrap_interval(np.concatenate([self.kl, self.kl_first], axis=1), seed)
        out = {}
        for j, m in enumerate(self.m):
            row = {}
            for i, (name, values) in enumerate((("kl", self.kl), ("kl_first", self.kl_first))):
                row[name] = float(values[:, j].mean())
                row[f"{name}_lo"] = float(low[i * k + j])
                row[f"{name}_hi"] = float(high[i * k + j])
            out[float(m)] = row
        return out


def answers_path(fingerprint: str) -> Path:
    """Where the answers with this fingerprint are kept."""
    return cache_dir() / "neutral-answers" / f"{fingerprint}.json"


def unsteered_answers(
    lm: LM,
    prompts: Sequence[str],
    max_new_tokens: int = KL_NEW_TOKENS,
    seed: int = 0,
    temperature: float = 0.0,
) -> NeutralAnswers:
    """The unsteered model's answers to `prompts`: read from the cache folder, else generated
    (one batch per length group, KV cache) and stored there. Keyed by the model (its name,
    configuration, dtype, device type and a sample of its weights), the prompts' token ids,
    `max_new_tokens`, `seed`, `temperature` and the torch and transformers versions."""
    if not prompts:
        raise SteerfrontError("no neutral prompts to answer")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise SteerfrontError(f"answer length must be a whole number, not {max_new_tokens!r}")
    if max_new_tokens < 1:
        raise SteerfrontError(f"answer length must be at least 1 token, not {max_new_tokens}")
    prompt_ids = _prompt_ids(lm, prompts)
    fingerprint = _fingerprint(lm, prompt_ids, max_new_tokens, seed, temperature)
    path = answers_path(fingerprint)
    answer_ids = _read_answers(path, prompt_ids)
    if answer_ids is None:
        answer_ids = _generate(lm, prompt_ids, max_new_tokens, temperature, seed)
        record = {
            "format": _FORMAT,
            "model": lm.spec,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "temperature": temperature,
            "prompts": list(prompts),
            "prompt_ids": [list(p) for p in prompt_ids],
            "answer_ids": [list(a) for a in answer_ids],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record).encode())
    return NeutralAnswers(tuple(prompts), prompt_ids, tuple(answer_ids), fingerprint)


def _prompt_ids(lm: LM, prompts: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """Each prompt's token ids as the model reads it (chat template when it has one)."""
    templated = lm.chat_template is not None
    prompt_ids = tuple(
        tuple(
            lm.tokenizer(render_prompt(lm.tokenizer, p), add_special_tokens=not templated)[
                "input_ids"
            ]
        )
        for p in prompts
    )
    empty = [p for p, ids in zip(prompts, prompt_ids, strict=True) if not ids]
    if empty:
        raise SteerfrontError(f"neutral prompt {empty[0]!r} has no tokens")
    return prompt_ids


def _fingerprint(
    lm: LM,
    prompt_ids: tuple[tuple[int, ...], ...],
    max_new_tokens: int,
    seed: int,
    temperature: float,
) -> str:
    digest = hashlib.sha256()
    key = {
        "format": _FORMAT,
        "model": lm.spec,
        "config": lm.config.to_json_string(use_diff=False),
        "dtype": str(lm.dtype),
        "device": lm.device.type,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prompt_ids": prompt_ids,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "temperature": float(temperature),
    }
    digest.update(json.dumps(key, sort_keys=True, default=str).encode())
    # A sample of every weight (64 values each): a local folder retrained in place is another
    # model. Cheap: about 20k values on the default model.
    with torch.no_grad():
        for name, param in lm.model.named_parameters():
            flat = param.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy()
            digest.update(name.encode() + str(tuple(param.shape)).encode() + sample.tobytes())
    return digest.hexdigest()[:24]


def _read_answers(
    path: Path, prompt_ids: tuple[tuple[int, ...], ...]
) -> list[tuple[int, ...]] | None:
    """The cached answers, or None if they are missing, damaged or for other prompts."""
    try:
        record = json.loads(path.read_text())
        answers = [tuple(int(t) for t in a) for a in record["answer_ids"]]
        stored = tuple(tuple(int(t) for t in p) for p in record["prompt_ids"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("format") != _FORMAT or stored != prompt_ids or len(answers) != len(stored):
        return None
    return answers if all(answers) else None


@torch.no_grad()
def _generate(
    lm: LM,
    prompt_ids: tuple[tuple[int, ...], ...],
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> list[tuple[int, ...]]:
    """One answer per prompt, as token ids up to and including the first stop token: rows
    batched by prompt length, left-padded, decoded with the KV cache (greedy unless
    `temperature` > 0; sampling seeded per batch)."""
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    pad = lm.tokenizer.pad_token_id
    pad = lm.tokenizer.eos_token_id if pad is None else pad
    stops = lm.model.generation_config.eos_token_id
    if not isinstance(stops, list):
        stops = [lm.tokenizer.eos_token_id if stops is None else stops]
    length = max(map(len, prompt_ids)) + max_new_tokens
    step = generation_rows(lm.config, lm.dtype, lm.device, length)
    out: list[tuple[int, ...]] = [()] * len(prompt_ids)
    for start in range(0, len(order), step):
        rows = order[start : start + step]
        width = max(len(prompt_ids[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(prompt_ids[i]) :] = torch.tensor(prompt_ids[i])
            mask[r, width - len(prompt_ids[i]) :] = 1
        torch.manual_seed(seed + start)
        tokens = lm.model.generate(
            input_ids=ids.to(lm.device),
            attention_mask=mask.to(lm.device),
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            pad_token_id=pad,
            **({"temperature": temperature, "top_k": 0} if temperature > 0 else {}),
        )
        for r, i in enumerate(rows):
            new = tokens[r, width:].tolist()
            end = next((j + 1 for j, t in enumerate(new) if t in stops), len(new))
            out[i] = tuple(new[:end])
    return out


@dataclass(frozen=True)
class _Item:
    """One prompt and the answer tokens scored on it (`shared_prompt_length` reads `prompt`)."""

    prompt: tuple[int, ...]
    answer: tuple[int, ...]


def _items(answers: NeutralAnswers, tokens: int | None) -> list[_Item]:
    return [
        _Item(p, a[:tokens] if tokens is not None else a)
        for p, a in zip(answers.prompt_ids, answers.answer_ids, strict=True)
    ]


def _pack(items: list[_Item], indices: list[int], pad_id: int) -> PackedBatch:
    """Rows `prompt + answer[:-1]` (the last answer token predicts nothing scored), its answer
    tokens as the positive completion, no negative one: a plain causal mask."""
    n = len(indices)
    lengths = [len(items[i].prompt) + len(items[i].answer) - 1 for i in indices]
    width, kp = max(lengths), max(len(items[i].answer) for i in indices)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    at = torch.zeros((n, kp), dtype=torch.long)
    tok = torch.zeros((n, kp), dtype=torch.long)
    valid = torch.zeros((n, kp), dtype=torch.bool)
    spans = []
    for r, i in enumerate(indices):
        p, a = len(items[i].prompt), len(items[i].answer)
        ids[r, : lengths[r]] = torch.tensor(items[i].prompt + items[i].answer[:-1])
        positions[r, : lengths[r]] = torch.arange(lengths[r])
        at[r, :a] = torch.arange(p - 1, p + a - 1)
        tok[r, :a] = torch.tensor(items[i].answer)
        valid[r, :a] = True
        spans.append((p, lengths[r]))
    none = torch.zeros((n, 0), dtype=torch.long)
    ends = torch.tensor(lengths)[:, None]
    return PackedBatch(
        pairs=torch.tensor(indices),
        input_ids=ids,
        position_ids=positions,
        lengths=torch.tensor(lengths),
        pos_span=torch.tensor(spans),
        neg_span=torch.cat([ends, ends], 1),
        pos_at=at,
        pos_tok=tok,
        pos_valid=valid,
        neg_at=none,
        neg_tok=none,
        neg_valid=none.bool(),
    )


def _batches(lm: LM, items: list[_Item]) -> list[PackedBatch]:
    """Length-sorted batches of `memory.tokens_per_batch` padded tokens at most."""
    lengths = [len(e.prompt) + len(e.answer) - 1 for e in items]
    budget = tokens_per_batch(lm.config, lm.dtype, lm.device, max(lengths))
    order = sorted(range(len(items)), key=lambda i: lengths[i])
    pad = lm.tokenizer.pad_token_id or 0
    batches, start = [], 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and lengths[order[stop]] * (stop + 1 - start) <= budget:
            stop += 1
        batches.append(_pack(items, order[start:stop], pad).to(lm.device))
        start = stop
    return batches


@dataclass(frozen=True)
class _Unsteered:
    """Per batch, the unsteered model at each scored position (rows in order, then answer
    tokens): its logits (positions, V) in fp32 if `logits`, else its final-normed states
    (positions, d), on which the head runs per call."""

    rows: list[torch.Tensor]
    logits: bool


def _unsteered(lm: LM, batches: list[PackedBatch]) -> _Unsteered:
    states = []
    for b in batches:
        final = lm.model.model.norm(
            lm.prefix(b.input_ids, lm.n_layers, b.mask(lm.dtype), b.position_ids)
        )
        final = final.gather(1, b.pos_at[..., None].expand(-1, -1, final.shape[-1]))
        states.append(final[b.pos_valid])
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    if sum(len(s) for s in states) * vocab * 4 > KEPT_LOGITS_BYTES:
        return _Unsteered(states, logits=False)
    chunk = max(1, LOGITS_PER_CHUNK // vocab)
    logits = [torch.cat([lm.head(c).float() for c in s.split(chunk)]) for s in states]
    return _Unsteered(logits, logits=True)


@torch.no_grad()
def kl_scores(
    lm: LM,
    intervention: Intervention | None,
    m: float | Sequence[float],
    answers: NeutralAnswers,
    cache: MemoryCache | None = None,
    tokens: int | None = KL_TOKENS,
) -> KLScores:
    """`kl` and `kl_first` of `intervention` at every value of `m`, per prompt, on the
    unsteered `answers` (`unsteered_answers`), teacher-forced; the first `tokens` tokens of
    each answer are scored (`defaults.KL_TOKENS`; None: all; 1: the first only, from the
    prompts alone, the cheapest). The cost grows with the number of values of m (a trial
    scores its own; bench/kl_cost.py). Without an intervention every value is 0. `cache`
    keeps the frozen prefix and the unsteered states for later calls (a worker's cache;
    without it, nothing is kept)."""
    grid = check_grid(m)
    tokens = _scored_tokens(answers, tokens)
    items = _items(answers, tokens)
    counts = np.array([len(e.answer) for e in items])
    zero = np.zeros((len(items), len(grid)))
    if intervention is None:
        return KLScores(grid, zero, zero.copy(), counts)
    check_fits(intervention, lm)
    cache = cache if cache is not None else MemoryCache(0)
    start, k = intervention.start, len(grid)
    key = (id(lm.model), answers.fingerprint, tokens)
    batches = cache.get(("kl-batches", *key), lambda: _batches(lm, items))
    base = cache.get(("kl-unsteered", *key), lambda: _unsteered(lm, batches))
    hidden = cache.get(("kl-prefix", *key, start), lambda: frozen_prefix(lm, batches, start))
    m_rows = torch.tensor(grid, dtype=torch.float32, device=lm.device)
    shared = _shared_prompt(lm, items, start, hidden[0], intervention, m_rows)
    skip = shared.length if shared is not None else 0
    budget = tokens_per_batch(lm.config, lm.dtype, lm.device, batches[-1].input_ids.shape[1])
    sums, first = np.zeros((len(items), k)), np.zeros((len(items), k))
    for batch, h, b in zip(batches, hidden, base.rows, strict=True):
        step = max(1, budget // (k * batch.input_ids.shape[1]))
        offsets = [0, *batch.pos_valid.sum(1).cumsum(0).tolist()]
        for lo in range(0, len(batch), step):
            rows = batch.select(slice(lo, lo + step))
            steered = _steered_states(
                lm, rows, start, h[lo : lo + step, skip : rows.input_ids.shape[1]],
                intervention, m_rows, shared,
            )  # fmt: skip
            valid = rows.pos_valid
            unsteered = b[offsets[lo] : offsets[min(lo + step, len(batch))]]
            per_token = _kl(lm, unsteered, base.logits, steered).cpu().double().numpy()
            r, c = (t.cpu().numpy() for t in valid.nonzero(as_tuple=True))
            prompt = rows.pairs.cpu().numpy()[r]
            np.add.at(sums, prompt, per_token)
            first[prompt[c == 0]] = per_token[c == 0]
    return KLScores(grid, sums / counts[:, None], first, counts)


def _scored_tokens(answers: NeutralAnswers, tokens: int | None) -> int | None:
    """`tokens` checked; None (every token: one cache key) when it covers every answer."""
    if tokens is not None and (
        isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1
    ):
        raise SteerfrontError(f"kl: tokens to score must be at least 1, not {tokens!r}")
    if not len(answers):
        raise SteerfrontError("kl: no neutral answers to score")
    if tokens is not None and tokens >= max(map(len, answers.answer_ids)):
        return None
    return tokens


@torch.no_grad()
def prompted_kl(
    lm: LM,
    answers: NeutralAnswers,
    instruction: str,
    cache: MemoryCache | None = None,
    tokens: int | None = KL_TOKENS,
) -> KLScores:
    """`kl` and `kl_first` of the prompted baseline, per prompt: KL(unsteered on the plain
    neutral prompt ‖ unsteered with `instruction` in it, `data.instructed`) at each scored token
    of the unsteered `answers`, teacher-forced, as `kl_scores` measures a steered model (one
    column, m = 0: no intervention). What asking for the concept costs on neutral text, beside
    what steering costs. The plain side is read from `cache` as `kl_scores` keeps it."""
    tokens = _scored_tokens(answers, tokens)
    items = _items(answers, tokens)
    prompts = _prompt_ids(lm, [instructed(p, instruction) for p in answers.prompts])
    asked = [_Item(p, e.answer) for p, e in zip(prompts, items, strict=True)]
    cache = cache if cache is not None else MemoryCache(0)
    key = (id(lm.model), answers.fingerprint, tokens)
    batches = cache.get(("kl-batches", *key), lambda: _batches(lm, items))
    plain = _by_item(batches, cache.get(("kl-unsteered", *key), lambda: _unsteered(lm, batches)))
    asked_batches = _batches(lm, asked)
    told = _by_item(asked_batches, _unsteered(lm, asked_batches))
    kl, first = np.zeros((len(items), 1)), np.zeros((len(items), 1))
    for i, (base, other) in enumerate(zip(plain, told, strict=True)):
        per_token = kl_from_logits(_logits(lm, *base), _logits(lm, *other)[:, None])[:, 0]
        kl[i, 0], first[i, 0] = per_token.double().mean().item(), per_token[0].item()
    counts = np.array([len(e.answer) for e in items])
    return KLScores(np.zeros(1), kl, first, counts)


def _by_item(batches: list[PackedBatch], unsteered: _Unsteered) -> list[tuple[torch.Tensor, bool]]:
    """`_unsteered`'s rows split per item (in item order): its states or logits at the item's
    answer positions, and whether they are logits."""
    out: dict[int, tuple[torch.Tensor, bool]] = {}
    for batch, rows in zip(batches, unsteered.rows, strict=True):
        parts = rows.split(batch.pos_valid.sum(1).tolist())
        for i, part in zip(batch.pairs.tolist(), parts, strict=True):
            out[i] = (part, unsteered.logits)
    return [out[i] for i in range(len(out))]


def _logits(lm: LM, rows: torch.Tensor, logits: bool) -> torch.Tensor:
    """Logits (tokens, V) from `_unsteered`'s rows, logits already or final-normed states."""
    return rows.float() if logits else lm.head(rows).float()


def _shared_prompt(
    lm: LM,
    items: list[_Item],
    start: int,
    hidden: torch.Tensor,
    intervention: Intervention,
    m_rows: torch.Tensor,
) -> SharedPrompt | None:
    """The prompt tokens every prompt starts with, run once per m (as the evaluator does)."""
    n = shared_prompt_length(items)
    if n == 0:
        return None
    hidden = hidden[:1, :n].expand(len(m_rows), n, -1)
    with intervention.attached(lm, m=m_rows):
        return SharedPrompt.run(lm, start, intervention.enter(hidden))


def _steered_states(
    lm: LM,
    rows: PackedBatch,
    start: int,
    hidden: torch.Tensor,
    intervention: Intervention,
    m_rows: torch.Tensor,
    shared: SharedPrompt | None,
) -> torch.Tensor:
    """The steered final-normed states at the answer positions, (answer tokens, k, d): rows
    run layers `start..L-1` once per value of m, `hidden` being their stream entering
    `start` after the shared prompt tokens."""
    k, n = len(m_rows), shared.length if shared is not None else 0
    repeated = rows.repeat(k)
    at = repeated.pos_at - n
    keep = torch.zeros((len(repeated), hidden.shape[1]), dtype=torch.bool, device=lm.device)
    r, c = repeated.pos_valid.nonzero(as_tuple=True)
    keep[r, at[r, c]] = True
    if shared is not None:
        shared = shared.read_by(torch.arange(len(repeated), device=lm.device) % k)
    mask = repeated.mask(lm.dtype)[:, :, n:]
    with intervention.attached(lm, m=m_rows.repeat(len(rows))):
        final = lm.suffix(
            intervention.enter(hidden.repeat_interleave(k, dim=0)),
            start,
            mask,
            repeated.position_ids[:, n:],
            keep=keep,
            cache=shared,
        )
    d = final.shape[-1]
    picked = final.gather(1, at.clamp(min=0)[..., None].expand(-1, -1, d))  # (rows·k, A, d)
    picked = picked.view(len(rows), k, -1, d).transpose(1, 2)  # (rows, A, k, d)
    return picked[rows.pos_valid]


def _kl(lm: LM, base: torch.Tensor, logits: bool, steered: torch.Tensor) -> torch.Tensor:
    """KL(unsteered ‖ steered) per answer token and m, (tokens, k): `base` is the unsteered
    logits (tokens, V) if `logits`, else final-normed states (tokens, d); `steered` (tokens, k,
    d) final-normed states; the head runs on a few tokens at a time (`forward.LOGITS_PER_CHUNK`
    logits)."""
    k, vocab = steered.shape[1], lm.model.get_output_embeddings().weight.shape[0]
    chunk = max(1, LOGITS_PER_CHUNK // (vocab * (k + 1)))
    out = [
        kl_from_logits(b if logits else lm.head(b), lm.head(s))
        for b, s in zip(base.split(chunk), steered.split(chunk), strict=True)
    ]
    return torch.cat(out) if out else torch.zeros((0, k), device=steered.device)


def kl_from_logits(unsteered: torch.Tensor, steered: torch.Tensor) -> torch.Tensor:
    """KL(softmax(unsteered) ‖ softmax(steered)) over the full vocabulary, in fp32:
    `unsteered` (n, V), `steered` (n, k, V); out (n, k).

    With `d = z - z'` the difference of the logits and `p` the unsteered distribution,
    `KL = Σ p·d + log Σ p·e^(-d)`, the second term as `log1p(Σ p·expm1(-d))`: its rounding
    error scales with `d` itself, where the difference of two fp32 log-softmaxes carries the
    rounding of the log-normalisers (about 1e-6 nats on a 49k vocabulary) whatever the
    steering, so m = 0 gives 0 rather than noise. A row where some logit rises by more than
    `_EXPM1_LIMIT` nats takes `logsumexp(log p - d)` instead (exp would overflow, and p may
    underflow at the very token that rises)."""
    z = unsteered.float()
    d = z[:, None] - steered.float()  # (n, k, V)
    p = z.softmax(-1)[:, :, None]  # (n, V, 1)
    mean = torch.bmm(d, p)[..., 0]
    rise = (-d).amax(-1)
    near = torch.log1p(torch.bmm(torch.expm1(-d.clamp(min=-_EXPM1_LIMIT)), p)[..., 0])
    if not bool((rise > _EXPM1_LIMIT).any()):
        return (mean + near).clamp(min=0)
    far = (z.log_softmax(-1)[:, None] - d).logsumexp(-1)  # p may underflow where d rises
    return (mean + torch.where(rise > _EXPM1_LIMIT, far, near)).clamp(min=0)
