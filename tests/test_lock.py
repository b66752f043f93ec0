"""The lock the Makefile installs from: exact, complete, and inside pyproject.toml's ranges."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]


def _lock() -> dict[str, str]:
    pins = {}
    for number, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([0-9][A-Za-z0-9_.!+\-]*)", line.strip())
        assert match, f"requirements.lock:{number}: not an exact pin: {line!r}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_every_dependency_is_pinned_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [
        spec for extra in ("test", "llama") for spec in project["optional-dependencies"][extra]
    ]
    pins = _lock()
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        assert name in pins, f"{spec.name} is not in requirements.lock"
        assert spec.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {spec.name}=={pins[name]}, outside {spec.specifier}"
        )
