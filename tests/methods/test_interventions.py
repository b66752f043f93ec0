import copy

import pytest
import torch

from steerfront.errors import SteerfrontError
from steerfront.methods import FORMS, init_intervention


def random_intervention(lm, form, layer=1, rank=3, seed=0):
    intervention = init_intervention(form, lm, layer, rank=rank)
    generator = torch.Generator().manual_seed(seed)
    for tensor in intervention.params.values():
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
    return intervention


def logits(lm, ids):
    with torch.no_grad():
        return lm.model(input_ids=ids, use_cache=False).logits


IDS = torch.randint(3, 200, (3, 9), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("form", FORMS)
def test_m_zero_is_the_unsteered_model_and_detach_restores_it(tiny_lm, form):
    before = logits(tiny_lm, IDS)
    state = copy.deepcopy(tiny_lm.model.state_dict())
    intervention = random_intervention(tiny_lm, form)
    with intervention.attached(tiny_lm):
        intervention.m = 0.0
        assert torch.equal(logits(tiny_lm, IDS), before)
        intervention.m = 1.5
        assert not torch.allclose(logits(tiny_lm, IDS), before)
    assert torch.equal(logits(tiny_lm, IDS), before)
    for name, tensor in tiny_lm.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


@pytest.mark.parametrize("m", [1.0, -0.7, 2.5])
def test_vector_equals_a_bias_after_the_block(tiny_lm, m):
    intervention = random_intervention(tiny_lm, "vector", layer=2)
    intervention.m = m
    v = intervention.params["v"]

    def add_bias(_module, _args, output):
        return output + m * v if not isinstance(output, tuple) else (output[0] + m * v,)

    handle = tiny_lm.layers[2].register_forward_hook(add_bias)
    expected = logits(tiny_lm, IDS)
    handle.remove()
    with intervention.attached(tiny_lm):
        torch.testing.assert_close(logits(tiny_lm, IDS), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("form", ["lora", "local_weight"])
@pytest.mark.parametrize("m", [1.0, -0.7])
def test_weight_forms_equal_editing_the_down_projection(tiny_lm, form, m):
    intervention = random_intervention(tiny_lm, form, layer=1)
    intervention.m = m
    proj = tiny_lm.down_proj(1)
    original = proj.weight.detach().clone()
    p = intervention.params
    delta_w = p["B"] @ p["A"] if form == "lora" else p["dW"]
    edited = torch.nn.Linear(proj.in_features, proj.out_features, bias=True)
    edited.weight.data = original + m * delta_w
    edited.bias.data = m * p["db"] if form == "local_weight" else torch.zeros(proj.out_features)
    tiny_lm.layers[1].mlp.down_proj = edited
    try:
        expected = logits(tiny_lm, IDS)
    finally:
        tiny_lm.layers[1].mlp.down_proj = proj
    with intervention.attached(tiny_lm):
        torch.testing.assert_close(logits(tiny_lm, IDS), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("form", FORMS)
def test_per_row_m_equals_rows_one_by_one(tiny_lm, form):
    intervention = random_intervention(tiny_lm, form)
    ms = torch.tensor([0.0, -1.0, 2.0])
    with intervention.attached(tiny_lm):
        intervention.m = ms
        batched = logits(tiny_lm, IDS)
        for row, m in enumerate(ms.tolist()):
            intervention.m = m
            one = logits(tiny_lm, IDS[row : row + 1])
            torch.testing.assert_close(batched[row : row + 1], one, atol=1e-5, rtol=0)


def test_per_row_m_of_the_wrong_length(tiny_lm):
    intervention = random_intervention(tiny_lm, "vector")
    intervention.m = torch.ones(2)
    with intervention.attached(tiny_lm), pytest.raises(SteerfrontError, match="2 values .* 3"):
        logits(tiny_lm, IDS)


@pytest.mark.parametrize(
    "form,layer,rank,message",
    [
        ("vector", 9, 1, r"layer 9 is out of range"),
        ("lora", 1, 0, r"rank 0 must be between 1 and 32"),
        ("lora", 1, 33, r"rank 33 must be between 1 and 32"),
        ("steer", 1, 1, r"unknown form 'steer'"),
    ],
)
def test_bad_requests_are_one_line(tiny_lm, form, layer, rank, message):
    with pytest.raises(SteerfrontError, match=message):
        init_intervention(form, tiny_lm, layer, rank=rank)


def test_shape_that_does_not_fit_is_refused(tiny_lm):
    intervention = random_intervention(tiny_lm, "vector")
    intervention.params["v"] = torch.zeros(7)
    with pytest.raises(SteerfrontError, match=r"tensor 'v' is \(7,\).* needs \(32,\)"):
        with intervention.attached(tiny_lm):
            pass
