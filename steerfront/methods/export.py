"""Exporting an intervention where people serve models, with `m` carried along.

| format   | forms     | files                                          | engines               |
| `gguf`   | vector    | control_vector.gguf, easysteer.json            | llama.cpp, EasySteer  |
| `peft`   | lora      | adapter_config.json, adapter_model.safetensors | vLLM LoRA, PEFT       |
| `merged` | all three | a Hugging Face model folder                    | vLLM, transformers... |

Each export writes `SERVE.md` beside its files with the exact commands. It is staged beside
the output folder and renamed into place, so a refusal or an interruption writes nothing.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

from steerfront.defaults import EXPORT_FORMATS, FORMS
from steerfront.errors import SteerfrontError
from steerfront.files import staged_dir
from steerfront.lm import LM, public_name, quiet_loading, serving_source
from steerfront.methods.gguf import write_control_vector
from steerfront.methods.interventions import Intervention, check_fits
from steerfront.methods.io import write_peft
from steerfront.methods.merged import merge_refusal, merged_model

FORMATS = dict(zip(EXPORT_FORMATS, (("vector",), ("lora",), FORMS), strict=True))
CONTROL_VECTOR = "control_vector.gguf"
EASYSTEER = "easysteer.json"


def formats_for(form: str) -> list[str]:
    """The formats that carry interventions of `form`."""
    return [name for name, forms in FORMATS.items() if form in forms]


def refusal(intervention: Intervention, lm: LM, to: str) -> str | None:
    """Why `intervention` cannot be exported as `to` for `lm` (one line), or None."""
    problem = format_refusal(intervention.form, intervention.layer, to)
    if problem is None and to == "merged":
        return merge_refusal(intervention, lm)
    return problem


def format_refusal(form: str, layer: int, to: str) -> str | None:
    """Why an intervention of `form` at `layer` cannot be exported as `to` whatever the model
    (one line, known from its sidecar before any model loads), or None."""
    if to not in FORMATS:
        return f"unknown format {to!r} (choose from {', '.join(FORMATS)})"
    if form not in FORMATS[to]:
        return (
            f"--to {to} carries {' and '.join(FORMATS[to])} interventions, not {form}; "
            f"use --to {' or --to '.join(formats_for(form))}"
        )
    if to == "gguf" and layer == 0:
        return (
            "a vector after block 0 cannot be expressed for llama.cpp: it adds direction.N to "
            "the output of block N and rejects N = 0; use --to merged"
        )
    return None


def export(
    intervention: Intervention, lm: LM, to: str, out: str | Path, m: float, replace: bool = False
) -> Path:
    """Write `intervention` at `m` in format `to` into the new (or empty) folder `out`; with
    `replace`, a folder that holds anything is replaced once the export is complete."""
    out = Path(out).expanduser()
    check_fits(intervention, lm)
    problem = refusal(intervention, lm, to)
    if problem:
        raise SteerfrontError(problem)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not replace)):
        raise SteerfrontError(f"--out {out}: exists and is not an empty folder")
    final = out.resolve()
    model_dir, model_gguf = serving_source(lm.spec)
    head = (
        f"# Serving {intervention.form} at layer {intervention.layer}, m = {m:g}\n\n"
        f"Model {lm.spec}; exported by steerfront {importlib.metadata.version('steerfront')}.\n"
    )
    with staged_dir(out, replace=replace) as staging:
        if to == "gguf":
            vector = intervention.params["v"].detach().float().cpu().numpy()
            write_control_vector(
                staging / CONTROL_VECTOR, vector, intervention.layer, lm.config.model_type
            )
            spec = easysteer_spec(final / CONTROL_VECTOR, intervention.layer, m)
            (staging / EASYSTEER).write_text(json.dumps(spec, indent=2) + "\n")
            text = serve_gguf(final, intervention.layer, m, model_dir, model_gguf)
        elif to == "peft":
            write_peft(intervention, staging, lm, m, base=public_name(lm.spec))
            text = serve_peft(final, model_dir, intervention.rank, public_name(lm.spec))
        else:
            with quiet_loading():
                merged_model(intervention, lm, m).save_pretrained(staging)
            lm.tokenizer.save_pretrained(staging)
            text = serve_merged(final, intervention.form)
        (staging / "SERVE.md").write_text(head + text)
    return out


def easysteer_spec(path: Path, layer: int, m: float) -> dict:
    """EasySteer's steering request for the control vector: `m` as the scale, at every prompt
    and generated token (as steerfront scores it), added as is (`direct`, not normalized)."""
    return {
        "steer_vector_name": "steerfront",
        "steer_vector_int_id": 1,
        "steer_vector_local_path": str(path),
        "scale": m,
        "target_layers": [layer],
        "prefill_trigger_tokens": [-1],
        "generate_trigger_tokens": [-1],
        "algorithm": "direct",
        "normalize": False,
    }


def serve_gguf(out: Path, layer: int, m: float, model_dir: str, model_gguf: Path | None) -> str:
    gguf = str(model_gguf) if model_gguf else "MODEL.gguf"
    convert = (
        ""
        if model_gguf
        else "\nMODEL.gguf is the model in llama.cpp's format (its converter: "
        f"`python convert_hf_to_gguf.py {model_dir} --outfile MODEL.gguf`).\n"
    )
    return f"""
`{CONTROL_VECTOR}` holds the vector at m = 1 as `direction.{layer}`; the commands pass
m = {m:g} as its scale. llama.cpp adds `direction.N` to the output of block N (0-based), where
steerfront's layer-{layer} vector acts.

## llama.cpp

    llama-server -m {gguf} --control-vector-scaled {out / CONTROL_VECTOR} {m:g}
    llama-cli -m {gguf} --control-vector-scaled {out / CONTROL_VECTOR} {m:g} -cnv
{convert}
llama-server applies one scale to every request: serve another m with another server.

## vLLM with EasySteer

`{EASYSTEER}` is the steering request (scale m, target layer {layer}, every token):

    import json
    from vllm import LLM, SamplingParams
    from vllm.steer_vectors.request import SteerVectorRequest

    llm = LLM(model="{model_dir}", enable_steer_vector=True, enforce_eager=True)
    steer = SteerVectorRequest(**json.load(open("{out / EASYSTEER}")))
    params = SamplingParams(max_tokens=64)
    print(llm.generate("Hello", params, steer_vector_request=steer)[0].outputs[0].text)

## transformers

A Hugging Face folder with the vector merged in: `steerfront export ... --to merged`.
"""


def serve_peft(out: Path, model_dir: str, rank: int | None, base: str | None = None) -> str:
    rank_flag = f" --max-lora-rank {rank}" if rank and rank > 16 else ""
    local = (
        ""
        if base is None or base == model_dir
        else f"""
`adapter_config.json` names its base model `{base}` (`base_model_name_or_path`), the name
PEFT and vLLM look it up by. The copy steerfront steered and scored is local, at
{model_dir}
(converted from the packaged GGUF file: close to, not identical with, the hub's weights); the
commands below load that copy, so the adapter acts on the weights it was made on.
"""
    )
    return f"""
A PEFT LoRA adapter on the MLP down-projection, with m folded into its weights
(`lora_alpha = r`, so every engine applies it at scale 1).
{local}
## vLLM

    vllm serve {model_dir} --enable-lora --lora-modules steer={out}{rank_flag}

Requests that name the model `steer` are steered; those that name the base model are not.

## transformers with PEFT

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained("{model_dir}")
    model = PeftModel.from_pretrained(base, "{out}")
    tokenizer = AutoTokenizer.from_pretrained("{model_dir}")
"""


def serve_merged(out: Path, form: str) -> str:
    llama_cpp = (
        "\n## llama.cpp\n\n"
        f"    python convert_hf_to_gguf.py {out} --outfile steered.gguf\n"
        "    llama-server -m steered.gguf\n"
        if form == "lora"
        else "\nFor llama.cpp, export a vector as a control vector: "
        "`steerfront export ... --to gguf`.\n"
        if form == "vector"
        else ""
    )
    return f"""
A Hugging Face model folder with the intervention merged into its weights; any engine that
loads such a folder serves it, with no steering code.

## vLLM

    vllm serve {out}

## transformers

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained("{out}")
    tokenizer = AutoTokenizer.from_pretrained("{out}")
{llama_cpp}"""
