"""An exported control vector run in llama.cpp, beside steerfront's evaluator, on the same pairs.

Given a folder written by `steerfront export ... --to gguf` for the default model, it loads the
packaged GGUF model in llama.cpp (its C library, through llama-cpp-python), applies the control
vector at the export's m (`easysteer.json`'s scale) as `llama-server --control-vector-scaled`
does, and scores the concept's test pairs (the split `sweep` uses) with llama.cpp's own logits.
steerfront's evaluator scores the same token ids with the vector read back from the file, at
the same layer and m. It prints both engines' means unsteered and steered, how far apart the
per-pair rises in pref_odds are, and llama.cpp's greedy answer to a prompt without and with the
vector. The last line is JSON.

    .venv/bin/python bench/llamacpp_agreement.py runs/deploy/intervention-gguf [--pairs 30]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from steerfront.data import encode_pairs, load_concept
from steerfront.defaults import DEFAULT_MODEL, TEST_FRACTION, TRAIN
from steerfront.lm import serving_source
from steerfront.methods.export import CONTROL_VECTOR, EASYSTEER
from steerfront.methods.gguf import control_vector_data
from steerfront.methods.interventions import Intervention
from steerfront.models import load_checked
from steerfront.scoring.evaluate import evaluate
from steerfront.scoring.llamacpp import LlamaCpp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="a gguf export folder (default model)")
    parser.add_argument("--concept", default="sentiment", help="concept (default: sentiment)")
    parser.add_argument("--pairs", type=int, default=30, help="test pairs (default: 30)")
    parser.add_argument(
        "--prompt",
        default="Write a one-sentence review of the hotel you stayed at.",
        help="prompt for the generations",
    )
    args = parser.parse_args()

    spec = json.loads((args.export / EASYSTEER).read_text())
    (layer,), m = spec["target_layers"], spec["scale"]
    path = args.export / CONTROL_VECTOR
    width, data = control_vector_data(path)
    vector = torch.from_numpy(data[width * (layer - 1) : width * layer].copy())
    lm = load_checked(DEFAULT_MODEL, dtype="float32")
    split = load_concept(args.concept).split(0.0, TEST_FRACTION, seed=TRAIN["seed"])
    test = encode_pairs(lm.tokenizer, split.test)[: args.pairs]
    ours = evaluate(lm, test, Intervention("vector", layer, {"v": vector}), [0.0, m])

    engine = LlamaCpp(serving_source(DEFAULT_MODEL)[1])
    engine.steer(None)
    theirs = {0.0: engine.score(test)}
    plain = engine.chat(args.prompt)
    engine.steer(path, m)
    theirs[m] = engine.score(test)
    steered = engine.chat(args.prompt)

    print(
        f"{len(test)} {args.concept} test pairs, direction.{layer} of {path} at m {m:g}; "
        "steerfront (fp32) and llama.cpp (Q4_1) on the same token ids"
    )
    print(f"{'m':>5}  {'engine':<10} {'pref_odds':>10} {'util_odds':>10} {'accuracy':>9}")
    rows = {}
    for i, value in enumerate((0.0, m)):
        mine = ours.pref.reshape(-1, 2)[:, i], ours.util.reshape(-1, 2)[:, i]
        mine_acc = ours.correct.reshape(-1, 2)[:, i].mean()
        for name, (pref, util, acc) in (
            ("steerfront", (*mine, mine_acc)),
            ("llama.cpp", (theirs[value].pref, theirs[value].util, theirs[value].correct.mean())),
        ):
            rows[name, value] = pref
            print(f"{value:>5g}  {name:<10} {pref.mean():>10.3f} {util.mean():>10.3f} {acc:>9.2f}")
    rise_ours = rows["steerfront", m] - rows["steerfront", 0.0]
    rise_theirs = rows["llama.cpp", m] - rows["llama.cpp", 0.0]
    gap = np.abs(rise_theirs - rise_ours)
    same = int((np.sign(rise_theirs) == np.sign(rise_ours)).sum())
    print(
        f"rise in pref_odds per pair: steerfront {rise_ours.mean():.3f}, llama.cpp "
        f"{rise_theirs.mean():.3f}; they differ by {gap.mean():.3f} on average (at most "
        f"{gap.max():.3f}), same direction for {same}/{len(test)} pairs"
    )
    print(f'llama.cpp, greedy, "{args.prompt}"')
    print(f"  unsteered: {' '.join(plain.split())}")
    print(f"  m = {m:g}:    {' '.join(steered.split())}")
    summary = {
        "pairs": len(test),
        "m": m,
        "layer": layer,
        "rise_steerfront": float(rise_ours.mean()),
        "rise_llama_cpp": float(rise_theirs.mean()),
        "mean_gap": float(gap.mean()),
        "max_gap": float(gap.max()),
        "same_direction": same,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
