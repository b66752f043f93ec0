import importlib
import math

import pytest
import torch

from steerfront.data import EncodedPair, PairSet, PolarityPair, encode_pairs, load_concept
from steerfront.errors import SteerfrontError
from steerfront.forward import completion_logprobs, frozen_prefix, pack, shared_prompt_length
from steerfront.methods import Objective, TrainSpec, diffmean, fit, train
from steerfront.methods.train import _loss

PAIRS = PairSet("few", load_concept("agreeableness").pairs[:12])


@pytest.mark.parametrize("form", ["vector", "lora", "local_weight"])
@pytest.mark.parametrize("objective", ["split", "sft", "reps"])
def test_training_moves_only_the_intervention(tiny_lm, form, objective):
    state = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    spec = TrainSpec(form=form, layer=2, objective=Objective(objective), batch_size=4, steps=4)
    intervention = fit(tiny_lm, PAIRS, spec)
    assert any(t.abs().sum() > 0 for t in intervention.params.values())
    assert all(not t.requires_grad for t in intervention.params.values())
    for name, tensor in tiny_lm.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert intervention.meta["objective"] == objective
    assert intervention.meta["dataset"] == PAIRS.fingerprint


def test_a_seed_makes_training_repeatable(tiny_lm):
    spec = TrainSpec(form="lora", layer=1, batch_size=4, steps=3, seed=7)
    first, again = fit(tiny_lm, PAIRS, spec), fit(tiny_lm, PAIRS, spec)
    for name in first.params:
        assert torch.equal(first.params[name], again.params[name])
    other = fit(tiny_lm, PAIRS, TrainSpec(form="lora", layer=1, batch_size=4, steps=3, seed=8))
    assert not torch.equal(first.params["A"], other.params["A"])


@pytest.mark.parametrize("form", ["vector", "lora", "local_weight"])
def test_split_buys_preference_in_the_direction_of_m(tiny_lm, form):
    # Constant completions give even a random tiny model a learnable concept direction.
    prompts = [p.prompt for p in load_concept("sentiment")][:16]
    pairs = PairSet("ab", tuple(PolarityPair(q, "A", "B") for q in prompts))
    encoded = encode_pairs(tiny_lm.tokenizer, pairs)
    spec = TrainSpec(
        form=form, layer=1, steps=16, patience=0, batch_size=4, lr=0.05, factors=(1.0,)
    )
    intervention = train(tiny_lm, encoded, spec)

    def mean_pref(m):
        total = 0.0
        with intervention.attached(tiny_lm), torch.no_grad():
            for batch in pack(encoded, 4096):
                intervention.m = m
                lp, ln = completion_logprobs(tiny_lm, batch, 0)
                total += (lp.sum(1) - ln.sum(1)).sum().item()
        return total / len(encoded)

    assert mean_pref(-1.0) + 0.1 < mean_pref(0.0) < mean_pref(1.0) - 0.1


@pytest.mark.parametrize("form", ["vector", "lora", "local_weight"])
@pytest.mark.parametrize("layer", [1, 3])
def test_frozen_prefix_training_equals_full_model_training(tiny_lm, form, layer):
    # Single-token completions too: both are predicted from the same position.
    ab = tuple(PolarityPair(p.prompt, "A", "B") for p in PAIRS.pairs[:4])
    encoded = encode_pairs(tiny_lm.tokenizer, PairSet("mixed", PAIRS.pairs[4:] + ab))
    # Every prompt starts with the template's token and "Is the following statement ...".
    assert shared_prompt_length(encoded) == 54
    spec = TrainSpec(form=form, layer=layer, batch_size=4, steps=3)
    ours = train(tiny_lm, encoded, spec)
    plain = train(tiny_lm, encoded, spec, use_frozen_prefix=False)
    for name in ours.params:
        torch.testing.assert_close(ours.params[name], plain.params[name], atol=1e-4, rtol=0)


def test_diffmean_matches_a_plain_per_pair_computation(tiny_lm):
    encoded = encode_pairs(tiny_lm.tokenizer, PAIRS)[:5]
    vectors = diffmean(tiny_lm, encoded)
    assert vectors.shape == (tiny_lm.n_layers, tiny_lm.hidden_size)
    expected = torch.zeros_like(vectors)
    for e in encoded:
        for completion, sign in ((e.positive, 1), (e.negative, -1)):
            ids = torch.tensor([e.prompt + completion])
            with torch.no_grad():
                states = tiny_lm.model(input_ids=ids, output_hidden_states=True).hidden_states
            for layer in range(tiny_lm.n_layers - 1):  # the last entry is after the final norm
                expected[layer] += sign * states[layer + 1][0, len(e.prompt) :].mean(0)
    expected /= len(encoded)
    torch.testing.assert_close(vectors[:-1], expected[:-1], atol=1e-4, rtol=0)


def test_diffmean_is_the_same_in_batches_of_one_pair(tiny_lm, monkeypatch):
    from steerfront import memory

    encoded = encode_pairs(tiny_lm.tokenizer, PAIRS)
    together = diffmean(tiny_lm, encoded)
    monkeypatch.setattr(memory, "CPU_TOKENS", 1)  # a batch: one row, at least
    torch.testing.assert_close(diffmean(tiny_lm, encoded), together, atol=1e-5, rtol=0)


def test_nan_loss_stops_with_the_step_and_objective(tiny_lm, monkeypatch):
    train_module = importlib.import_module("steerfront.methods.train")

    real_loss, calls = train_module._loss, []

    def loss_turning_nan(*args):
        calls.append(1)
        loss = real_loss(*args)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(train_module, "_loss", loss_turning_nan)
    encoded = encode_pairs(tiny_lm.tokenizer, PAIRS)
    spec = TrainSpec(form="vector", layer=1, batch_size=4, objective=Objective("reps"))
    with pytest.raises(SteerfrontError, match=r"training stopped at step 2: reps loss is nan"):
        train(tiny_lm, encoded, spec)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(form="lora", objective=Objective("diffmean")), "diffmean cannot produce a lora"),
        (dict(form="vector", factors=()), "training factors are empty"),
        (dict(form="vector", factors=(1.0, float("inf"))), "training factors must be finite"),
        (dict(form="blend"), "unknown form 'blend'"),
        (dict(form="vector", objective_name="dpo"), "unknown objective 'dpo'"),
    ],
)
def test_bad_specs(kwargs, message):
    with pytest.raises(SteerfrontError, match=message):
        if "objective_name" in kwargs:
            Objective(kwargs["objective_name"])
        else:
            TrainSpec(layer=1, **kwargs)


def test_sft_is_split_without_the_negative_and_hinge_terms():
    sft = Objective("sft")
    assert (sft.lambda_p, sft.lambda_n, sft.gamma) == (1.0, 0.0, 0.0)


def loss_on_a_known_batch(objective):
    """`_loss` on two pairs (2 and 3, then 1 and 2 completion tokens) as add and sub rows.

    Rows: pair 0 add, pair 0 sub, pair 1 add, pair 1 sub; the per-token log-probabilities are
    set by hand (zero past a completion's end, as `completion_logprobs` leaves them).
    Sums (length): row 0 pos -1.5 (2), neg -4.0 (3); row 1 pos -2.0 (2), neg -1.5 (3);
    row 2 pos -0.2 (1), neg -4.0 (2); row 3 pos -2.0 (1), neg -1.0 (2).
    """
    pairs = [EncodedPair((5, 6), (7, 8), (9, 10, 11)), EncodedPair((5, 6, 7, 8), (8,), (9, 10))]
    (batch,) = pack(pairs, 4096)
    rows = batch.repeat(2)
    assert rows.pairs.tolist() == [0, 0, 1, 1]
    assert rows.pos_valid.sum(1).tolist() == [2, 2, 1, 1]
    assert rows.neg_valid.sum(1).tolist() == [3, 3, 2, 2]
    lp = torch.tensor([[-0.5, -1.0], [-1.25, -0.75], [-0.2, 0.0], [-2.0, 0.0]], dtype=torch.float64)
    ln = torch.tensor(
        [[-2.0, -1.5, -0.5], [-0.25, -0.5, -0.75], [-3.0, -1.0, 0.0], [-0.4, -0.6, 0.0]],
        dtype=torch.float64,
    )
    add = torch.tensor([True, False, True, False])
    # Unsteered (sum log P(A_p), sum log P(A_n)) per pair, one row each for add and sub.
    reference = torch.tensor([[-3.0, -1.0], [-2.0, -6.0]], dtype=torch.float64)
    counts = rows.pos_valid.sum(1), rows.neg_valid.sum(1)
    reference = reference.repeat_interleave(2, dim=0)
    return _loss(objective, *counts, lp.sum(1), ln.sum(1), add, reference).item()


# Winning: row 0 pos, row 1 neg, row 2 pos, row 3 neg; losing the other completion.
CE_W = (1.5 + 1.5 + 0.2 + 1.0) / (2 + 3 + 1 + 2)  # 0.525
CE_L = (4.0 + 2.0 + 4.0 + 2.0) / (3 + 2 + 2 + 1)  # 1.5


@pytest.mark.parametrize("theta,hinge", [(1.2, 1.2 - 0.975), (0.5, 0.0)])  # margin 0.975
def test_split_loss_by_hand(theta, hinge):
    objective = Objective("split", lambda_p=1.0, lambda_n=0.4, gamma=5.0, theta=theta)
    assert max(0.0, theta - (CE_L - CE_W)) == pytest.approx(hinge)
    expected = 1.0 * CE_W + 0.4 * CE_L + 5.0 * hinge  # 2.25 with the hinge on, 1.125 off
    assert loss_on_a_known_batch(objective) == pytest.approx(expected, abs=1e-6)


def test_sft_loss_by_hand_is_the_winning_cross_entropy_alone():
    objective = Objective("sft", lambda_p=2.0, lambda_n=0.4, gamma=5.0, theta=1.2)
    assert loss_on_a_known_batch(objective) == pytest.approx(2.0 * CE_W, abs=1e-6)


def test_reps_loss_by_hand():
    # beta = max(r_l - r_w, 1): row 0 (add) -1 - -3 = 2; row 1 (sub) -3 - -1 -> 1;
    # row 2 (add) -6 - -2 -> 1; row 3 (sub) -2 - -6 = 4.
    # z = beta * sum_w / |w| - sum_l / |l|:
    z = [
        2 * (-1.5 / 2) - (-4.0 / 3),  # -1/6
        1 * (-1.5 / 3) - (-2.0 / 2),  # 0.5
        1 * (-0.2 / 1) - (-4.0 / 2),  # 1.8
        4 * (-1.0 / 2) - (-2.0 / 1),  # 0
    ]
    expected = sum(math.log(1 + math.exp(-x)) for x in z) / 4  # -mean log sigmoid(z)
    assert loss_on_a_known_batch(Objective("reps")) == pytest.approx(expected, abs=1e-6)


def test_packed_scoring_matches_the_reference(tiny_lm):
    from steerfront.scoring.reference import reference_nll

    encoded = (
        encode_pairs(tiny_lm.tokenizer, load_concept("sentiment"))[:6]
        + encode_pairs(tiny_lm.tokenizer, PAIRS)[:4]
    )
    batches = pack(encoded, 4096)
    assert len(batches) >= 1 and any(b.lengths.min() < b.input_ids.shape[1] for b in batches)
    for layer in (0, 3):
        for batch, hidden in zip(batches, frozen_prefix(tiny_lm, batches, layer), strict=True):
            with torch.no_grad():
                lp, ln = completion_logprobs(tiny_lm, batch, layer, hidden)
            for row, pair in enumerate(batch.pairs.tolist()):
                ref_p = reference_nll(tiny_lm, encoded[pair], positive=True)
                ref_n = reference_nll(tiny_lm, encoded[pair], positive=False)
                assert abs(-lp[row].sum().item() - ref_p) < 1e-3
                assert abs(-ln[row].sum().item() - ref_n) < 1e-3


def _optimizer_steps(monkeypatch):
    calls = []
    real = torch.optim.AdamW.step

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting)
    return calls


@pytest.mark.parametrize("pairs", [4, 12])
def test_the_step_budget_does_not_shrink_with_the_set(tiny_lm, monkeypatch, pairs):
    calls = _optimizer_steps(monkeypatch)
    encoded = encode_pairs(tiny_lm.tokenizer, PAIRS)[:pairs]
    spec = TrainSpec(form="lora", layer=2, batch_size=4, steps=10, patience=0)
    intervention = train(tiny_lm, encoded, spec)
    assert len(calls) == 10
    assert intervention.meta["steps_run"] == 10 and "holdout_loss" not in intervention.meta


def test_early_stopping_keeps_the_best_parameters(tiny_lm, monkeypatch):
    """Held-out pairs that want the opposite of the training pairs: their loss is lowest at
    the first check, so training stops `patience` checks later and returns to that point."""
    from steerfront.methods.train import TRAIN, _draw, _Rows

    calls = _optimizer_steps(monkeypatch)
    prompts = [p.prompt for p in load_concept("sentiment")][:16]
    fitting = PairSet("ab", tuple(PolarityPair(q, "A", "B") for q in prompts[:12]))
    held = PairSet("ba", tuple(PolarityPair(q, "B", "A") for q in prompts[12:]))
    encoded = encode_pairs(tiny_lm.tokenizer, fitting)
    holdout = encode_pairs(tiny_lm.tokenizer, held)
    spec = TrainSpec(
        form="vector", layer=1, batch_size=4, lr=0.05, factors=(1.0,), steps=64, patience=2
    )
    intervention = train(tiny_lm, encoded, spec, holdout=holdout)
    every = TRAIN["check_every"]
    assert intervention.meta["best_step"] == every
    assert intervention.meta["steps_run"] == 3 * every == len(calls)
    # The parameters returned are the best ones: their held-out loss is the one recorded.
    rows = _Rows(tiny_lm, holdout, spec, intervention.start, True)
    draw = torch.Generator().manual_seed(spec.seed + 1)
    with intervention.attached(tiny_lm), torch.no_grad():
        losses = [
            rows.loss(intervention, i, _draw(len(b), torch.tensor([1.0]), draw)).item()
            for i, b in enumerate(rows.batches)
        ]
    assert sum(losses) / len(losses) == pytest.approx(intervention.meta["holdout_loss"], abs=1e-5)


def test_fit_holds_out_whole_prompts_only_when_stopping_early(tiny_lm, monkeypatch):
    train_module = importlib.import_module("steerfront.methods.train")
    seen = {}
    real = train_module.train

    def spy(lm, encoded, spec, meta=None, holdout=None, **kwargs):
        seen.update(fitted=len(encoded), held=len(holdout or []))
        seen["shared"] = {e.prompt for e in encoded} & {e.prompt for e in holdout or []}
        return real(lm, encoded, spec, meta=meta, holdout=holdout, **kwargs)

    monkeypatch.setattr(train_module, "train", spy)
    twice = PairSet("twice", PAIRS.pairs + tuple(PolarityPair(p.prompt, "B", "A") for p in PAIRS))
    spec = TrainSpec(form="vector", layer=1, batch_size=4, steps=8)
    intervention = fit(tiny_lm, twice, spec)
    assert seen["held"] > 0 and seen["fitted"] + seen["held"] == len(twice)
    assert not seen["shared"]  # both pairs of a prompt on the same side
    assert {"steps", "patience", "holdout_loss", "best_step"} <= set(intervention.meta)
    fit(tiny_lm, twice, TrainSpec(form="vector", layer=1, batch_size=4, steps=8, patience=0))
    assert (seen["fitted"], seen["held"]) == (len(twice), 0)


@pytest.mark.parametrize(
    "form,objective",
    [(f, o) for f in ("vector", "lora", "local_weight") for o in ("split", "sft", "reps")]
    + [("vector", "diffmean")],
)
def test_training_in_bf16_keeps_fp32_parameters(tiny_lm_bf16, form, objective, monkeypatch):
    optimizers = []

    class Recorded(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            optimizers.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", Recorded)
    state = {k: v.clone() for k, v in tiny_lm_bf16.model.state_dict().items()}
    spec = TrainSpec(form=form, layer=2, objective=Objective(objective), batch_size=4, steps=4)
    intervention = fit(tiny_lm_bf16, PAIRS, spec)
    assert {t.dtype for t in intervention.params.values()} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in intervention.params.values())
    assert any(t.abs().sum() > 0 for t in intervention.params.values())
    moments = [t for o in optimizers for s in o.state.values() for t in s.values()]
    assert len(optimizers) == (objective != "diffmean")
    assert all(t.dtype == torch.float32 for t in moments) and (moments or not optimizers)
    for name, tensor in tiny_lm_bf16.model.state_dict().items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, state[name]), name
