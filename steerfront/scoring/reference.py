"""The plain reference scorer: one pair, one completion, one forward through the full model.

Slow on purpose; the fast evaluator is checked against it.
"""

from __future__ import annotations

import torch

from steerfront.data import EncodedPair
from steerfront.lm import LM


@torch.no_grad()
def reference_nll(lm: LM, pair: EncodedPair, positive: bool, per_token: bool = False) -> float:
    """Summed (or per-token mean) NLL of one completion given its prompt."""
    completion = pair.positive if positive else pair.negative
    ids = torch.tensor([pair.prompt + completion], device=lm.device)
    logits = lm.model(input_ids=ids, use_cache=False).logits[0].float()
    start = len(pair.prompt)
    logprobs = torch.log_softmax(logits[start - 1 : -1], dim=-1)
    nll = -logprobs.gather(1, ids[0, start:, None]).sum()
    return float(nll / len(completion) if per_token else nll)
