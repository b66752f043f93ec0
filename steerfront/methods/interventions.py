"""Three intervention forms as one dynamic weight update `h' = (W + m·ΔW) h + (b + m·Δb)`.

| form           | parameters            | acts on                          | change          |
| `vector`       | v (d_model)           | residual stream after block l    | m·v             |
| `lora`         | A (r, d_in), B (d_out, r) | MLP down-projection of layer l | m·B·A·x         |
| `local_weight` | dW (d_out, d_in), db (d_out) | MLP down-projection of layer l | m·(dW·x + db) |

Attaching adds forward hooks and leaves the model's weights untouched, so detaching restores it
exactly. `m` is a float or a per-row tensor, read at every forward: set it without rebuilding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from steerfront.defaults import FORMS
from steerfront.errors import SteerfrontError
from steerfront.lm import LM


@dataclass
class Intervention:
    """A steering intervention at decoder layer `layer`, scaled by `m`."""

    form: str
    layer: int
    params: dict[str, torch.Tensor]
    m: float | torch.Tensor = 1.0
    meta: dict = field(default_factory=dict)

    @property
    def rank(self) -> int | None:
        return self.params["A"].shape[0] if self.form == "lora" else None

    @property
    def start(self) -> int:
        """The first layer steering changes, where the frozen prefix ends: a vector enters the
        stream after block `layer`, so that block is unsteered; the other forms act inside it."""
        return self.layer + 1 if self.form == "vector" else self.layer

    def enter(self, hidden: torch.Tensor) -> torch.Tensor:
        """The stream entering layer `start`, steered (block `layer`'s hook never runs when a
        vector's suffix starts after it; the other forms steer inside the suffix)."""
        return self._scaled(hidden, hidden) if self.form == "vector" else hidden

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The unscaled change `ΔW x + Δb` for input `x` (for `vector`: `v`), in the wider of
        the two dtypes: fp32 parameters on a bf16 model see the activation cast up (a no-op on
        an fp32 model), so they train and apply in fp32."""
        p = self.params
        if self.form == "vector":
            return p["v"]
        x = x.to(torch.promote_types(x.dtype, next(iter(p.values())).dtype))
        if self.form == "lora":
            return (x @ p["A"].T) @ p["B"].T
        return x @ p["dW"].T + p["db"]

    def _scaled(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`out + m·delta(x)`, the change computed in its own dtype and cast to the
        activation's where it is added."""
        m, delta = self.m, self.delta(x)
        if isinstance(m, torch.Tensor) and m.dim() > 0:
            if m.shape[0] != out.shape[0]:
                raise SteerfrontError(
                    f"per-row m has {m.shape[0]} values for a batch of {out.shape[0]} rows"
                )
            m = m.to(delta.dtype).view(-1, *([1] * (out.dim() - 1)))
        return out + (m * delta).to(out.dtype)

    @contextmanager
    def attached(self, lm: LM, m: float | torch.Tensor | None = None) -> Iterator[Intervention]:
        """Steer `lm` inside the block (at `m` if given); afterwards the model and `m` are
        exactly as before."""
        check_fits(self, lm)
        saved = self.m
        if m is not None:
            self.m = m
        if self.form == "vector":

            def hook(_module: nn.Module, _args: tuple, output: object) -> object:
                if isinstance(output, tuple):
                    return (self._scaled(output[0], output[0]), *output[1:])
                return self._scaled(output, output)

            handle = lm.layers[self.layer].register_forward_hook(hook)
        else:

            def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
                return self._scaled(output, args[0])

            handle = lm.down_proj(self.layer).register_forward_hook(hook)
        try:
            yield self
        finally:
            handle.remove()
            self.m = saved


def check_fits(intervention: Intervention, lm: LM) -> None:
    """Refuse an intervention whose layer or shapes do not fit `lm`, in one line."""
    lm.check_layer(intervention.layer)
    expected = shapes(intervention.form, lm, intervention.layer, intervention.rank or 1)
    for name, shape in expected.items():
        got = intervention.params.get(name)
        if got is None or tuple(got.shape) != shape:
            found = "missing" if got is None else tuple(got.shape)
            raise SteerfrontError(
                f"{intervention.form} intervention: tensor {name!r} is {found}, "
                f"but {lm.spec} layer {intervention.layer} needs {shape}"
            )


def shapes(form: str, lm: LM, layer: int, rank: int = 1) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of `form` at `layer` of `lm`."""
    if form not in FORMS:
        raise SteerfrontError(f"unknown form {form!r} (choose from {', '.join(FORMS)})")
    if form == "vector":
        return {"v": (lm.hidden_size,)}
    proj = lm.down_proj(layer)
    d_in, d_out = proj.in_features, proj.out_features
    if form == "lora":
        if not isinstance(rank, int) or not 0 < rank <= min(d_in, d_out):
            raise SteerfrontError(
                f"rank {rank!r} must be between 1 and {min(d_in, d_out)} "
                f"(the down-projection is {d_out}x{d_in})"
            )
        return {"A": (rank, d_in), "B": (d_out, rank)}
    return {"dW": (d_out, d_in), "db": (d_out,)}


def init_intervention(
    form: str, lm: LM, layer: int, rank: int = 4, seed: int = 0, meta: dict | None = None
) -> Intervention:
    """A fresh intervention whose change is zero: zeros, or LoRA's random A with B = 0."""
    lm.check_layer(layer)
    generator = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in shapes(form, lm, layer, rank).items():
        tensor = torch.zeros(shape, dtype=torch.float32)
        if name == "A":
            bound = 1 / math.sqrt(shape[1])  # kaiming-uniform with a = sqrt(5), as nn.Linear
            tensor.uniform_(-bound, bound, generator=generator)
        params[name] = tensor.to(lm.device)
    return Intervention(form=form, layer=layer, params=params, meta=dict(meta or {}))
