import torch

from steerfront.lm import load_model
from steerfront.methods import init_intervention
from steerfront.methods.generate import generate, generate_rows


def test_a_pad_id_of_zero_reaches_generate_and_only_a_missing_one_falls_back_to_eos(
    tiny_model_dir, monkeypatch
):
    lm = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    eos = lm.tokenizer.eos_token_id
    lm.tokenizer.pad_token = lm.tokenizer.convert_ids_to_tokens(0)
    assert lm.tokenizer.pad_token_id == 0 and eos != 0
    seen = []
    original = lm.model.generate

    def recording(**kwargs):
        seen.append(kwargs["pad_token_id"])
        return original(**kwargs)

    monkeypatch.setattr(lm.model, "generate", recording)
    intervention = init_intervention("vector", lm, 1)
    generate(lm, "hi", intervention, m=1.0, max_new_tokens=2)  # unsteered and steered: one batch
    assert seen == [0]
    lm.tokenizer.pad_token = None
    generate(lm, "hi", intervention, m=1.0, max_new_tokens=2)
    assert lm.tokenizer.pad_token_id is None and seen[1:] == [eos]


def test_one_batch_of_prompts_and_strengths_answers_as_each_row_alone(tiny_lm):
    """Left padding and a per-row m change nothing: every row of a mixed batch (prompts of
    different lengths, several m, the unsteered m = 0) is the answer that row gets alone."""
    torch.manual_seed(1)
    intervention = init_intervention("vector", tiny_lm, 1)
    intervention.params["v"] = torch.randn(tiny_lm.hidden_size)
    prompts = ["hi", "a longer prompt here", "mid size", "hi"]
    m = [0.0, 2.0, -3.0, 5.0]
    batched = generate_rows(tiny_lm, prompts, intervention, m, max_new_tokens=8)
    alone = [generate_rows(tiny_lm, [p], intervention, [v], max_new_tokens=8)[0]
             for p, v in zip(prompts, m, strict=True)]  # fmt: skip
    assert batched == alone
    assert batched[0] != batched[3]  # same prompt, another m: steering shows
    unsteered = generate_rows(tiny_lm, prompts[:1], None, [0.0], max_new_tokens=8)
    assert unsteered == batched[:1]


def test_sampling_is_seeded(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    args = (lm, ["hi", "hi"], None, [0.0, 0.0])
    first = generate_rows(*args, max_new_tokens=6, temperature=1.0, seed=3)
    again = generate_rows(*args, max_new_tokens=6, temperature=1.0, seed=3)
    other = generate_rows(*args, max_new_tokens=6, temperature=1.0, seed=4)
    assert first == again and first != other
