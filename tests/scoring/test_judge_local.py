from types import SimpleNamespace

import numpy as np
import torch

from steerfront.scoring.judge.local import LocalJudge


def test_read_scores_each_row_as_its_own_forward(tiny_lm):
    """Rows of several lengths batched and padded together score as each alone."""
    contexts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    texts = [[20, 21], [22], [], [23, 24, 25]]
    judge = SimpleNamespace(lm=tiny_lm, layer=1)
    logp, counts, states = LocalJudge._read(judge, contexts, texts, with_states=True)
    assert counts.tolist() == [2, 1, 0, 3]
    for i, (context, text) in enumerate(zip(contexts, texts, strict=True)):
        if not text:
            assert logp[i] == 0 and not states[i].any()
            continue
        ids = torch.tensor([context + text])
        with torch.no_grad():
            out = tiny_lm.model(input_ids=ids, output_hidden_states=True, use_cache=False)
        a = len(context)
        logprobs = torch.log_softmax(out.logits[0, a - 1 : -1].float(), dim=-1)
        expected = float(logprobs.gather(1, ids[0, a:, None]).sum())
        np.testing.assert_allclose(logp[i], expected, atol=1e-4)
        mean = out.hidden_states[2][0, a:].float().mean(0).numpy()
        np.testing.assert_allclose(states[i], mean, atol=1e-4)
