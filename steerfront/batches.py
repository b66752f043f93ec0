"""Token sequences into batches: sorted by length and cut under a budget of padded tokens or
rows (`by_length`), then padded into one tensor with its attention mask (`pad`). Every batched
forward steerfront runs on its own (scoring, the self-check, the local judge, generation)
batches this way."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def by_length(
    lengths: Sequence[int], tokens: int | None = None, rows: int | None = None
) -> list[list[int]]:
    """Indices of `lengths` sorted by length (ties in order) and cut into batches: each one's
    padded size (its longest length times its rows) at most `tokens`, or one row if that is
    longer, and at most `rows` rows."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, start = [], 0
    while start < len(order):
        stop = start + 1
        while (
            stop < len(order)
            and (tokens is None or lengths[order[stop]] * (stop + 1 - start) <= tokens)
            and (rows is None or stop - start < rows)
        ):
            stop += 1
        batches.append(order[start:stop])
        start = stop
    return batches


def pad(
    seqs: Sequence[Sequence[int]], value: int = 0, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """`seqs` as one (rows, longest) tensor of ids, padded with `value` on the right (or the
    left, for generation), and its mask (1 on the tokens, 0 on the padding)."""
    width = max(map(len, seqs), default=0)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[r, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[r, span] = 1
    return ids, mask
