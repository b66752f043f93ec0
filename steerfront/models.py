"""Models ready to be scored: loaded (`lm`, the ground floor), then checked against their own
forward (`scoring.selfcheck`, which scores). The two steps are composed here, above scoring,
so that loading never reaches up to the evaluator.

Commands that score (evaluate, sweep, a search's workers) load through `load_checked`;
those that only run the model's own forward or read its weights (generate, export, datasets'
token counts) load with `lm.load_model` and skip the check.
"""

from __future__ import annotations

import torch

from steerfront.defaults import DEFAULT_MODEL
from steerfront.lm import LM, load_model
from steerfront.scoring.selfcheck import self_check


def load_checked(
    spec: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
) -> LM:
    """`lm.load_model`, then refused unless steerfront's fast path scores a few probes as the
    model's own forward does (`scoring.selfcheck`; unsteered and steered by each form, on the
    default model 0.75 s on two busy cores in fp32)."""
    lm = load_model(spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    self_check(lm)
    return lm
