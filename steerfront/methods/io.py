"""Saving and loading interventions: safetensors plus a JSON sidecar, and PEFT export for LoRA.

Nothing here pickles: tensors go through safetensors and everything else through JSON, so a
file from someone else can be loaded without running their code. The sidecar records the
sha256 of the tensor file, so a file changed after export is refused rather than trusted.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from steerfront.defaults import FORMS
from steerfront.errors import SteerfrontError
from steerfront.files import open_mode, sha256, staged_dir
from steerfront.lm import LM, public_name
from steerfront.methods.interventions import Intervention, check_fits

_SUFFIX = ".safetensors"
_REQUIRED = ("form", "layer", "rank", "hidden_size", "n_layers", "shapes", "meta", "sha256")


def _pair(path: str | Path) -> tuple[Path, Path]:
    """The tensor file and its sidecar for `path`, given as either file or without extension."""
    path = Path(path).expanduser()
    stem = next(
        (path.name[: -len(end)] for end in (_SUFFIX, ".json") if path.name.endswith(end)),
        path.name,
    )
    return path.with_name(stem + _SUFFIX), path.with_name(stem + ".json")


def _temp_beside(path: Path) -> Path:
    """A fresh temporary file in `path`'s folder, so `os.replace` onto `path` is atomic."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def save_intervention(intervention: Intervention, path: str | Path, lm: LM) -> Path:
    """Write `<path>.safetensors` and its `<path>.json` sidecar; return the tensor file.

    Both are written under temporary names and then moved into place (tensors first), so an
    interruption never leaves a half-written file; a stale sidecar fails the hash check.
    """
    check_fits(intervention, lm)
    tensors_path, sidecar_path = _pair(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: tensor.detach().to("cpu").contiguous() for name, tensor in intervention.params.items()
    }
    sidecar = {
        "form": intervention.form,
        "layer": intervention.layer,
        "rank": intervention.rank,
        "model": lm.spec,
        "hidden_size": lm.hidden_size,
        "n_layers": lm.n_layers,
        "shapes": {name: list(tensor.shape) for name, tensor in tensors.items()},
        "meta": intervention.meta,
        "version": importlib.metadata.version("steerfront"),
    }
    temp_tensors, temp_sidecar = _temp_beside(tensors_path), _temp_beside(sidecar_path)
    try:
        save_file(tensors, temp_tensors)
        sidecar["sha256"] = sha256(temp_tensors)
        try:
            text = json.dumps(sidecar, indent=2)
        except (TypeError, ValueError) as exc:
            raise SteerfrontError(
                f"{sidecar_path}: meta is not JSON-serializable ({exc})"
            ) from None
        temp_sidecar.write_text(text + "\n", encoding="utf-8")
        open_mode(temp_tensors)
        open_mode(temp_sidecar)
        os.replace(temp_tensors, tensors_path)
        os.replace(temp_sidecar, sidecar_path)
    finally:
        temp_tensors.unlink(missing_ok=True)
        temp_sidecar.unlink(missing_ok=True)
    return tensors_path


def _read_sidecar(sidecar_path: Path) -> dict:
    """The sidecar as plain data, with every field `load_intervention` relies on present."""
    if not sidecar_path.is_file():
        raise SteerfrontError(f"{sidecar_path}: sidecar file is missing")
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SteerfrontError(
            f"{sidecar_path}: not valid JSON (line {exc.lineno}: {exc.msg})"
        ) from None
    except UnicodeDecodeError:
        raise SteerfrontError(f"{sidecar_path}: not valid JSON (not UTF-8 text)") from None
    if not isinstance(sidecar, dict):
        raise SteerfrontError(f"{sidecar_path}: expected a JSON object")
    for name in _REQUIRED:
        if name not in sidecar:
            raise SteerfrontError(f"{sidecar_path}: field {name!r} is missing")
    if sidecar["form"] not in FORMS:
        raise SteerfrontError(
            f"{sidecar_path}: field 'form' is {sidecar['form']!r}, not one of {', '.join(FORMS)}"
        )
    for name in ("layer", "hidden_size", "n_layers"):
        if not isinstance(sidecar[name], int) or isinstance(sidecar[name], bool):
            raise SteerfrontError(
                f"{sidecar_path}: field {name!r} must be an integer, got {sidecar[name]!r}"
            )
    if not isinstance(sidecar["meta"], dict):
        raise SteerfrontError(f"{sidecar_path}: field 'meta' must be a JSON object")
    if not isinstance(sidecar["shapes"], dict):
        raise SteerfrontError(f"{sidecar_path}: field 'shapes' must be a JSON object")
    return sidecar


def read_sidecar(path: str | Path) -> dict:
    """An intervention's sidecar as data (which model it was made for, its meta), validated."""
    _check_given(path)
    return _read_sidecar(_pair(path)[1])


def _check_given(path: str | Path) -> None:
    """Refuse, naming the file the user gave, an intervention that is not there."""
    given = Path(path).expanduser()
    tensors_path, sidecar_path = _pair(path)
    if given.name.endswith((_SUFFIX, ".json")) and not given.is_file():
        raise SteerfrontError(f"{given}: no such file")
    if not tensors_path.is_file() and not sidecar_path.is_file():
        raise SteerfrontError(
            f"{given}: no such intervention (neither {tensors_path.name} nor {sidecar_path.name})"
        )
    if not sidecar_path.is_file():
        raise SteerfrontError(
            f"{sidecar_path}: sidecar file is missing (the JSON beside {tensors_path.name})"
        )


def check_files(path: str | Path, config: object | None = None, model: str = "") -> dict:
    """An intervention's files checked without loading a model: both there, the tensors the
    ones the sidecar hashed and of the shapes it records, and, given the model's `config`
    (read cheaply: `lm.model_config`), made for its layer count and width. Return the
    sidecar; each problem is one line naming the file at fault."""
    from safetensors import safe_open

    sidecar = read_sidecar(path)
    tensors_path, sidecar_path = _pair(path)
    _check_checksum(tensors_path, sidecar_path, sidecar)
    try:
        with safe_open(tensors_path, framework="pt") as handle:
            found = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise SteerfrontError(f"{tensors_path}: not a readable safetensors file ({exc})") from None
    if found != sidecar["shapes"]:
        raise SteerfrontError(
            f"{sidecar_path}: field 'shapes' is {sidecar['shapes']}, "
            f"but {tensors_path.name} holds {found}"
        )
    if config is None:
        return sidecar
    have = {
        "hidden_size": getattr(config, "hidden_size", None),
        "n_layers": getattr(config, "num_hidden_layers", None),
    }
    for name, value in have.items():
        if value is not None and sidecar[name] != value:
            raise SteerfrontError(
                f"{sidecar_path}: made for a model with {name} {sidecar[name]}, "
                f"but {model} has {value}"
            )
    if not 0 <= sidecar["layer"] < (have["n_layers"] or sidecar["n_layers"]):
        raise SteerfrontError(
            f"{sidecar_path}: layer {sidecar['layer']} is out of range for {model} "
            f"(layers 0..{(have['n_layers'] or sidecar['n_layers']) - 1})"
        )
    return sidecar


def _check_checksum(tensors_path: Path, sidecar_path: Path, sidecar: dict) -> None:
    """The tensor file exists and is the one the sidecar was written for."""
    if not tensors_path.is_file():
        raise SteerfrontError(f"{tensors_path}: tensor file is missing")
    if sha256(tensors_path) != sidecar["sha256"]:
        raise SteerfrontError(
            f"{tensors_path}: sha256 differs from the one in {sidecar_path.name}; "
            "the file was modified (tampered or corrupted) after export"
        )


def load_intervention(path: str | Path, lm: LM) -> Intervention:
    """Load an intervention saved by `save_intervention` onto `lm`'s device, at m = 1.

    Refuses, in one line, a tensor file changed since export, a sidecar made for a model of
    another size, and tensors whose shapes do not fit `lm`.
    """
    _check_given(path)
    tensors_path, sidecar_path = _pair(path)
    sidecar = _read_sidecar(sidecar_path)
    _check_checksum(tensors_path, sidecar_path, sidecar)
    for name, have in (("hidden_size", lm.hidden_size), ("n_layers", lm.n_layers)):
        if sidecar[name] != have:
            raise SteerfrontError(
                f"{sidecar_path}: made for a model with {name} {sidecar[name]}, "
                f"but {lm.spec} has {have}"
            )
    try:
        params = load_file(tensors_path, device=str(lm.device))
    except SafetensorError as exc:
        raise SteerfrontError(f"{tensors_path}: not a readable safetensors file ({exc})") from None
    found = {name: list(tensor.shape) for name, tensor in params.items()}
    if found != sidecar["shapes"]:
        raise SteerfrontError(
            f"{sidecar_path}: field 'shapes' is {sidecar['shapes']}, "
            f"but {tensors_path.name} holds {found}"
        )
    intervention = Intervention(
        form=sidecar["form"], layer=sidecar["layer"], params=params, meta=sidecar["meta"]
    )
    check_fits(intervention, lm)
    if intervention.rank != sidecar["rank"]:
        raise SteerfrontError(
            f"{sidecar_path}: field 'rank' is {sidecar['rank']!r}, "
            f"but the tensors have rank {intervention.rank!r}"
        )
    return intervention


def export_peft(
    intervention: Intervention,
    folder: str | Path,
    lm: LM,
    m: float = 1.0,
    base: str | None = None,
) -> Path:
    """Write a LoRA intervention at `m` as a PEFT adapter folder for `PeftModel.from_pretrained`
    (and vLLM's `--lora-modules`); `base` is the base model it names (default: the model's
    public name, `lm.public_name`: the built-in model's hub id).

    PEFT adds `(lora_alpha / r)·B·A·x` to the adapted module's output; with `lora_alpha = r`
    and `m·B` as B that is exactly our lora form at `m` on layer `layer`'s down-projection (an
    engine fixes an adapter's scale, so the strength goes into the weights), and only that
    module is targeted (by its full name, so no other layer matches).
    """
    folder = Path(folder).expanduser()
    with staged_dir(folder, replace=True) as staging:
        write_peft(intervention, staging, lm, m, base)
    return folder


def write_peft(
    intervention: Intervention, folder: Path, lm: LM, m: float = 1.0, base: str | None = None
) -> None:
    """`export_peft`'s files, written into the existing `folder`."""
    from peft import LoraConfig

    if intervention.form != "lora":
        raise SteerfrontError(
            f"export_peft: only lora interventions become PEFT adapters, not {intervention.form!r}"
        )
    check_fits(intervention, lm)
    target = lm.down_proj(intervention.layer)
    module_name = next(name for name, module in lm.model.named_modules() if module is target)
    rank = intervention.rank
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=[module_name],
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        inference_mode=True,
        base_model_name_or_path=base or public_name(lm.spec),
    )
    prefix = f"base_model.model.{module_name}"
    params = {name: t.detach().to("cpu", torch.float32) for name, t in intervention.params.items()}
    tensors = {
        f"{prefix}.lora_A.weight": params["A"].contiguous(),
        f"{prefix}.lora_B.weight": (m * params["B"]).contiguous(),
    }
    config.save_pretrained(str(folder))
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
