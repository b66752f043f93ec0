"""Neutral instructions: prompts with no stake in any concept, on which `kl` is measured.

A built-in set of 70 open instructions ships in `neutral/prompts.txt` (written for steerfront,
Apache-2.0; see `neutral/README.md`). A user's own set is a text file, one instruction per line
(blank lines and lines starting with `#` skipped), or a `.jsonl` file of objects with a
`"prompt"` string. Bad input is refused in one line that names the file and line.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from steerfront.errors import SteerfrontError


def builtin_prompts_path() -> Path:
    """The built-in neutral instructions (`neutral/prompts.txt` in this package)."""
    return Path(str(resources.files("steerfront.data") / "neutral" / "prompts.txt"))


def load_prompts(path: str | Path) -> list[str]:
    """Every prompt of a neutral-prompts file, in file order, validated."""
    path = Path(path)
    if not path.is_file():
        raise SteerfrontError(f"{path}: no such file (neutral prompts)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SteerfrontError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise SteerfrontError(f"{path}: cannot be read ({exc.strerror})") from None
    jsonl = path.suffix.lower() == ".jsonl"
    prompts: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or (not jsonl and line.startswith("#")):
            continue
        prompt = _jsonl_prompt(path, number, line) if jsonl else line
        if "\x00" in prompt:
            raise SteerfrontError(f"{path}:{number}: contains a NUL character")
        if prompt in seen:
            raise SteerfrontError(f"{path}:{number}: repeats the prompt of line {seen[prompt]}")
        seen[prompt] = number
        prompts.append(prompt)
    if not prompts:
        raise SteerfrontError(f"{path}: no prompts in file (one instruction per line)")
    return prompts


def _jsonl_prompt(path: Path, number: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SteerfrontError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
    prompt = record.get("prompt") if isinstance(record, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise SteerfrontError(f'{path}:{number}: expected an object with a "prompt" string')
    return prompt.strip()


def neutral_prompts(path: str | Path | None = None, count: int | None = None) -> list[str]:
    """The first `count` neutral prompts (all of them if `count` is None or more than the file
    has) of `path`, or of the built-in set without it."""
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise SteerfrontError(f"the number of neutral prompts must be at least 1, not {count!r}")
    prompts = load_prompts(path if path is not None else builtin_prompts_path())
    return prompts[:count] if count is not None else prompts
