import torch

from steerfront.lm import load_model
from steerfront.methods import init_intervention
from steerfront.methods.generate import generate


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
    generate(lm, "hi", intervention, m=1.0, max_new_tokens=2)  # unsteered, then steered
    assert seen == [0, 0]
    lm.tokenizer.pad_token = None
    generate(lm, "hi", intervention, m=1.0, max_new_tokens=2)
    assert lm.tokenizer.pad_token_id is None and seen[2:] == [eos, eos]
