"""Scoring completions fast: shared-prompt packing, a frozen prefix, logits only where scored.

Each pair becomes one packed sequence `[prompt | positive | negative]`: the negative tokens sit
at the same positions as the positive ones and cannot see them (a tree mask), so the prompt is
computed once for both completions; the prompt tokens every pair starts with (a chat template's
system turn) run once per value of m, not once per pair (`SharedPrompt`). Layers below the
first one steering changes (a vector's own block included) see no steering, so the stream
entering it (the frozen prefix) is computed once and reused for every `m` and every training
step. Above it, the head and the last block's MLP run only at scored positions. Training and
evaluation both run on these batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from steerfront.batches import by_length, pad
from steerfront.data import EncodedPair
from steerfront.lm import LM
from steerfront.memory import tokens_per_batch

# Logits computed at once (24 MiB in fp32: 128 rows of a 49k vocabulary); larger blocks cost
# fresh pages on every allocation and fall out of the CPU's caches between passes.
LOGITS_PER_CHUNK = 6 << 20


@dataclass(frozen=True)
class PackedBatch:
    """Packed pair sequences of similar length, right-padded.

    `pos_at[i, t]` is the position whose logits predict positive token `t` of row `i`,
    `pos_tok` the token, `pos_valid` whether it exists; likewise for the negative completion.
    `pos_span`/`neg_span` give each completion's own segment (for activations on it).
    """

    pairs: torch.Tensor  # (B,) index of each row's pair in the encoded list
    input_ids: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    lengths: torch.Tensor  # (B,)
    pos_span: torch.Tensor  # (B, 2) start, end of the positive segment
    neg_span: torch.Tensor  # (B, 2)
    pos_at: torch.Tensor
    pos_tok: torch.Tensor
    pos_valid: torch.Tensor
    neg_at: torch.Tensor
    neg_tok: torch.Tensor
    neg_valid: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def mask(self, dtype: torch.dtype) -> torch.Tensor:
        """4D additive mask: causal, within length, negative tokens blind to positive ones."""
        t = self.input_ids.shape[1]
        idx = torch.arange(t, device=self.input_ids.device)
        allowed = (idx[None, :, None] >= idx[None, None, :]) & (
            idx[None, None, :] < self.lengths[:, None, None]
        )
        in_pos = _within(idx, self.pos_span)
        in_neg = _within(idx, self.neg_span)
        allowed &= ~(in_neg[:, :, None] & in_pos[:, None, :])
        allowed |= torch.eye(t, dtype=torch.bool, device=idx.device)  # padding sees itself
        zero = torch.zeros((), dtype=dtype, device=idx.device)
        blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=idx.device)
        return torch.where(allowed, zero, blocked)[:, None]

    def repeat(self, times: int) -> PackedBatch:
        """Each row `times` times in a row (for an m-grid, or add and sub rows)."""
        fields = {
            name: getattr(self, name).repeat_interleave(times, dim=0)
            for name in self.__dataclass_fields__
        }
        return PackedBatch(**fields)

    def select(self, rows: slice) -> PackedBatch:
        """A sub-batch of rows, trimmed to their own longest sequence (length-sorted rows
        then carry little padding)."""
        width = int(self.lengths[rows].max())
        fields = {name: getattr(self, name)[rows] for name in self.__dataclass_fields__}
        fields["input_ids"] = fields["input_ids"][:, :width]
        fields["position_ids"] = fields["position_ids"][:, :width]
        return PackedBatch(**fields)

    def to(self, device: torch.device) -> PackedBatch:
        return replace(self, **{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})


@dataclass
class SharedPrompt:
    """Keys and values, per layer and per value of m, of the first `length` tokens of every
    prompt: each row's attention reads them before its own (attention calls `update` on it as
    on a transformers cache). Empty, it records; with `rows` (per batch row, the index of its
    m), it is read."""

    length: int
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    rows: torch.Tensor | None = None

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *_args, **_kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rows is None:
            self.kv[layer_idx] = key, value
            return key, value
        k, v = self.kv[layer_idx]
        return torch.cat([k[self.rows], key], 2), torch.cat([v[self.rows], value], 2)

    def read_by(self, rows: torch.Tensor) -> SharedPrompt:
        return replace(self, rows=rows)

    @classmethod
    def run(cls, lm: LM, layer: int, hidden: torch.Tensor) -> SharedPrompt:
        """Run layers `layer..L-1` on the shared tokens, one row per value of m, recording
        their keys and values; `hidden` (rows, length, d) is their stream entering `layer`,
        steered (any steering inside the layers is attached, at one value of m per row)."""
        (k, n), blocked = hidden.shape[:2], torch.finfo(lm.dtype).min
        mask = torch.full((n, n), blocked, dtype=lm.dtype, device=lm.device).triu(1)
        positions = torch.arange(n, device=lm.device).expand(k, n)
        shared = cls(n)
        lm.suffix(hidden, layer, mask.expand(k, 1, n, n), positions, lm.n_layers, cache=shared)
        return shared


def shared_prompt_length(encoded: list[EncodedPair]) -> int:
    """How many tokens every prompt starts with, leaving each prompt its last token (whose
    logits predict the completions)."""
    first, n = encoded[0].prompt, min(len(e.prompt) for e in encoded) - 1
    for e in encoded:
        n = next((i for i in range(n) if e.prompt[i] != first[i]), n)
    return n


def _within(idx: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    return (idx[None, :] >= span[:, :1]) & (idx[None, :] < span[:, 1:])


def batch_tokens(
    lm: LM, encoded: list[EncodedPair], stored_layers: int = 0, copies: int = 1, kept: int = 0
) -> int:
    """Padded tokens per batch of `encoded` on `lm`'s device (`memory.tokens_per_batch`, rows
    as long as the longest packed pair), each batch run `copies` times at once (training's add
    and sub rows) through `stored_layers` layers that keep activations for backward, keeping
    `kept` bytes a token beside."""
    width = max(len(e.prompt) + len(e.positive) + len(e.negative) for e in encoded)
    return tokens_per_batch(lm.config, lm.dtype, lm.device, width, stored_layers, copies, kept)


def pack(
    encoded: list[EncodedPair],
    tokens: int,
    full_completions: bool = False,
    max_rows: int | None = None,
    pad_id: int = 0,
) -> list[PackedBatch]:
    """Length-sorted batches of packed sequences, `tokens` padded tokens each at most (or one
    pair, if that is longer).

    Scoring needs no logits after a completion's last token, so by default that token is left
    out; `full_completions` keeps it (for activations on every completion token). `max_rows`
    caps the pairs per batch (a training step's batch size).
    """
    drop = 0 if full_completions else 1
    lengths = [len(e.prompt) + len(e.positive) + len(e.negative) - 2 * drop for e in encoded]
    return [
        _pack_rows([encoded[i] for i in rows], rows, drop, pad_id)
        for rows in by_length(lengths, tokens, max_rows)
    ]


def _pack_rows(rows: list[EncodedPair], pairs: list[int], drop: int, pad_id: int) -> PackedBatch:
    cut = [(len(e.positive) - drop, len(e.negative) - drop) for e in rows]
    seqs = [e.prompt + e.positive[:a] + e.negative[:b] for e, (a, b) in zip(rows, cut, strict=True)]
    ids, _ = pad(seqs, pad_id)
    n, width = ids.shape
    kp, kn = max(len(e.positive) for e in rows), max(len(e.negative) for e in rows)
    positions = torch.zeros((n, width), dtype=torch.long)
    lengths, pos_span, neg_span = [], [], []
    at = {k: torch.zeros((n, w), dtype=torch.long) for k, w in (("pos", kp), ("neg", kn))}
    tok = {k: torch.zeros((n, w), dtype=torch.long) for k, w in (("pos", kp), ("neg", kn))}
    valid = {k: torch.zeros((n, w), dtype=torch.bool) for k, w in (("pos", kp), ("neg", kn))}
    for i, e in enumerate(rows):
        p = len(e.prompt)
        a, b = cut[i]
        positions[i, : p + a + b] = torch.cat(
            [torch.arange(p), torch.arange(p, p + a), torch.arange(p, p + b)]
        )
        lengths.append(p + a + b)
        pos_span.append((p, p + a))
        neg_span.append((p + a, p + a + b))
        for key, tokens, seg in (("pos", e.positive, p), ("neg", e.negative, p + a)):
            k = len(tokens)
            at[key][i, :k] = torch.tensor([p - 1] + list(range(seg, seg + k - 1)))
            tok[key][i, :k] = torch.tensor(tokens)
            valid[key][i, :k] = True
    return PackedBatch(
        pairs=torch.tensor(pairs),
        input_ids=ids,
        position_ids=positions,
        lengths=torch.tensor(lengths),
        pos_span=torch.tensor(pos_span),
        neg_span=torch.tensor(neg_span),
        pos_at=at["pos"],
        pos_tok=tok["pos"],
        pos_valid=valid["pos"],
        neg_at=at["neg"],
        neg_tok=tok["neg"],
        neg_valid=valid["neg"],
    )


def frozen_prefix(
    lm: LM, batches: list[PackedBatch], layer: int, progress: bool = False
) -> list[torch.Tensor]:
    """The stream entering `layer` for every batch, computed once (no gradient)."""
    # What runs once: the blocks below the first one the intervention changes (a vector at
    # layer l acts after block l, so its prefix includes block l).
    what = f"blocks 0-{layer - 1}" if layer > 1 else ("block 0" if layer == 1 else "embeddings")
    bar = tqdm(batches, desc=f"frozen prefix ({what}, run once)", disable=not progress)
    with torch.no_grad():
        return [lm.prefix(b.input_ids, layer, b.mask(lm.dtype), b.position_ids) for b in bar]


def completion_logprobs(
    lm: LM,
    batch: PackedBatch,
    layer: int,
    hidden: torch.Tensor | None = None,
    shared: SharedPrompt | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of both completions (zero where a row has no token).

    With `hidden` (the frozen prefix of `batch` at `layer`) only layers `layer..L-1` run;
    without it, the whole model runs. With `shared`, `hidden` starts after the shared prompt
    tokens, whose keys and values `shared` holds. The head runs only at scored positions,
    padding excluded, and the log-normaliser is a logsumexp (no full log-softmax table).
    """
    mask = batch.mask(lm.dtype)
    valid = torch.cat([batch.pos_valid, batch.neg_valid], dim=1)
    rows, cols = valid.nonzero(as_tuple=True)
    at = torch.cat([batch.pos_at, batch.neg_at], dim=1)[rows, cols]
    tok = torch.cat([batch.pos_tok, batch.neg_tok], dim=1)[rows, cols]
    if hidden is None:  # the plain way: every layer, logits at every position
        with lm.windows(mask, batch.position_ids):
            logits = lm.model(
                input_ids=batch.input_ids,
                attention_mask=mask,
                position_ids=batch.position_ids,
                use_cache=False,
            ).logits[rows, at]
        picked = _logprob_of(logits, tok)
    else:
        n = shared.length if shared is not None else 0
        at = at - n
        keep = torch.zeros(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        keep[rows, at] = True
        final = lm.suffix(
            hidden, layer, mask[:, :, n:], batch.position_ids[:, n:], keep=keep, cache=shared
        )[rows, at]
        chunk = max(1, LOGITS_PER_CHUNK // lm.model.get_output_embeddings().weight.shape[0])
        pieces = zip(final.split(chunk), tok.split(chunk), strict=True)
        picked = torch.cat([_logprob_of(lm.head(f), t) for f, t in pieces])
    out = torch.zeros(valid.shape, dtype=picked.dtype, device=picked.device)
    out = out.index_put((rows, cols), picked)
    return out[:, : batch.pos_valid.shape[1]], out[:, batch.pos_valid.shape[1] :]


def _logprob_of(logits: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
    """log p(tok) per row of logits (fp32)."""
    logits = logits.float()
    return logits.gather(1, tok[:, None])[:, 0] - logits.logsumexp(-1)
