"""An intervention merged into the model's weights at a fixed `m`: a plain Hugging Face model
that any engine able to load one serves, with no steering code.

All three forms act on layer `layer`'s MLP down-projection output `y = W x`:
`lora` becomes `W + m·B·A`, `local_weight` `W + m·ΔW` with bias `m·Δb`, and `vector` a bias
`m·v` (the block adds the MLP's output to the residual stream unchanged, so a bias there is the
vector added after the block). A bias needs an architecture whose down-projection can have one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from steerfront.errors import SteerfrontError
from steerfront.lm import LM
from steerfront.methods.interventions import Intervention

# Decoder blocks that add the MLP's output to the residual stream as it is (no norm or scale
# after it), where a down-projection bias is the same as a vector after the block.
PLAIN_RESIDUAL = ("llama", "mistral", "qwen2", "qwen3")


def merge_refusal(intervention: Intervention, lm: LM) -> str | None:
    """Why this intervention cannot be merged into `lm` (one line), or None if it can."""
    kind, form = lm.config.model_type, intervention.form
    if form == "vector" and kind not in PLAIN_RESIDUAL:
        return (
            f"a vector cannot be merged into {kind} ({lm.spec}): its blocks change the MLP's "
            "output before the residual add; use --to gguf (llama.cpp, EasySteer on vLLM)"
        )
    if form != "lora" and not _bias_possible(lm):
        if form == "vector":
            return (
                f"{kind} ({lm.spec}) has no down-projection bias to carry the vector; "
                "use --to gguf (llama.cpp, EasySteer on vLLM)"
            )
        return (
            f"{kind} ({lm.spec}) has no down-projection bias to carry local_weight's bias; "
            "no export format carries local_weight on this architecture"
        )
    return None


def merged_model(intervention: Intervention, lm: LM, m: float) -> nn.Module:
    """A new model of `lm`'s class with the intervention at `m` in its weights.

    It shares every tensor with `lm` but the changed ones (built on the meta device, then
    given `lm`'s tensors), so it costs one layer's memory, not a second model; it is for
    saving. Where a bias is added to a model without one, its config turns the MLP biases on
    and the new biases are zero except the one that carries the change.
    """
    refusal = merge_refusal(intervention, lm)
    if refusal:
        raise SteerfrontError(refusal)
    proj = lm.down_proj(intervention.layer)
    name = next(n for n, module in lm.model.named_modules() if module is proj)
    config = copy.deepcopy(lm.config)
    if intervention.form != "lora" and proj.bias is None:
        config.mlp_bias = True
    with torch.device("meta"):
        model = type(lm.model)(config)
    state = dict(lm.model.state_dict())
    for key, tensor in model.state_dict().items():  # the biases the switch added
        state.setdefault(key, torch.zeros(tensor.shape, dtype=lm.dtype, device=lm.device))
    weight, bias = _merge(intervention, m, proj.weight, state.get(f"{name}.bias"))
    state[f"{name}.weight"] = weight
    if bias is not None:
        state[f"{name}.bias"] = bias
    model.load_state_dict(state, assign=True, strict=True)
    model.generation_config = copy.deepcopy(lm.model.generation_config)
    return model


def _merge(
    intervention: Intervention, m: float, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The down-projection's weight and bias with the change at `m` added (in fp32, then
    rounded once to the model's dtype)."""
    p = {k: t.detach().to(weight.device, torch.float32) for k, t in intervention.params.items()}
    w = weight.detach().float()
    b = None if bias is None else bias.detach().float()
    if intervention.form == "lora":
        w = w + m * (p["B"] @ p["A"])
    elif intervention.form == "local_weight":
        w, b = w + m * p["dW"], b + m * p["db"]
    else:
        b = b + m * p["v"]
    return w.to(weight.dtype), None if b is None else b.to(weight.dtype)


def _bias_possible(lm: LM) -> bool:
    """Whether the down-projection has a bias, or gets one from the architecture's switch for
    MLP biases (`mlp_bias`, as Llama has)."""
    if lm.down_proj(0).bias is not None:
        return True
    if not hasattr(lm.config, "mlp_bias"):
        return False
    config = copy.deepcopy(lm.config)
    config.mlp_bias = True
    try:
        with torch.device("meta"):
            mlp = type(lm.layers[0].mlp)(config)
    except TypeError:  # an MLP built from more than the config
        return False
    return getattr(getattr(mlp, "down_proj", None), "bias", None) is not None
