"""Concept data: polarity pairs, loaders for published formats, and built-in concept sets."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from steerfront.data.loaders import FORMATS, load_pairs
from steerfront.data.schema import PairSet, PolarityPair, Splits, instructed
from steerfront.data.tokenize import (
    EncodedPair,
    encode_pairs,
    end_of_turn_tokens,
    render_prompt,
)
from steerfront.errors import SteerfrontError

__all__ = [
    "FORMATS",
    "EncodedPair",
    "PairSet",
    "PolarityPair",
    "Splits",
    "builtin_names",
    "encode_pairs",
    "end_of_turn_tokens",
    "instructed",
    "load_concept",
    "load_pairs",
    "render_prompt",
]


def _builtin_dir() -> Path:
    return Path(str(resources.files("steerfront.data") / "builtin"))


def builtin_names() -> list[str]:
    """Names of the concept sets shipped inside the package."""
    return sorted(path.stem for path in _builtin_dir().glob("*.jsonl"))


def load_concept(spec: str, fmt: str | None = None) -> PairSet:
    """A built-in concept by name, or a concept file by path."""
    if spec in builtin_names():
        return load_pairs(_builtin_dir() / f"{spec}.jsonl", "steerfront")
    if not Path(spec).exists() and "/" not in spec and "." not in spec:
        raise SteerfrontError(
            f"concept {spec!r}: not a built-in set ({', '.join(builtin_names())}) nor a file"
        )
    return load_pairs(spec, fmt)
