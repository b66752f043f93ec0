"""Checks the commands make before a model loads (17-20 s for the default model): output
folders, intervention files, and what the model's configuration alone tells (its layers and
width), each refused in one line naming the flag or file at fault."""

from __future__ import annotations

from pathlib import Path

from steerfront.errors import SteerfrontError


def check_out(out: Path, force: bool, flag: str = "--out") -> None:
    """Refuse to write over a folder that holds anything, unless `force` (then it is replaced
    whole once the new results are complete); a file in the way is refused even so."""
    if out.exists() and not out.is_dir():
        raise SteerfrontError(f"{flag} {out}: exists and is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        held = sorted(p.name for p in out.iterdir())
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise SteerfrontError(
            f"{flag} {out}: exists and is not empty ({shown}); pass --force to replace it, "
            f"or choose another {flag}"
        )


def model_config(spec: str) -> object:
    """The model's configuration, read without its weights (`lm.model_config`)."""
    from steerfront.lm import model_config as read

    return read(spec)


def check_layer(layer: int, config: object, spec: str, flag: str = "--layer") -> int:
    """`layer` if the model has it (from its configuration), else one line naming `flag`."""
    count = config.num_hidden_layers
    if not 0 <= layer < count:
        raise SteerfrontError(
            f"{flag} {layer}: layer {layer} is out of range for {spec} (layers 0..{count - 1})"
        )
    return layer


def check_intervention(path: str | Path, model: str) -> dict:
    """An intervention's files checked against the model it is for (checksum, shapes, the
    model's layer count and width), before the model loads; its sidecar."""
    from steerfront.methods.io import check_files

    return check_files(path, model_config(model), model)
