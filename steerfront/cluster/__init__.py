"""Ready-to-edit templates for running `steerfront search` on a Ray cluster.

- ``kuberay-rayjob``: a KubeRay ``RayJob`` manifest (Kubernetes; ``kubectl apply -f``).
- ``ray-up``: a Ray cluster launcher config for AWS (``ray up``).

Each file explains at its top what to edit and how to use it; README.md beside them covers a
cluster started by hand and where MLflow runs.
"""

from __future__ import annotations

import pathlib
from importlib.resources import files

from steerfront.errors import SteerfrontError

TEMPLATES = {"kuberay-rayjob": "kuberay-rayjob.yaml", "ray-up": "ray-up.yaml"}


def template_path(name: str) -> pathlib.Path:
    """The installed file of the template `name` ("kuberay-rayjob" or "ray-up")."""
    if name not in TEMPLATES:
        raise SteerfrontError(
            f"unknown cluster template {name!r}; choose one of: {', '.join(TEMPLATES)}"
        )
    path = pathlib.Path(str(files(__name__) / TEMPLATES[name]))
    if not path.is_file():
        raise SteerfrontError(f"cluster template {name!r} is missing from the install ({path})")
    return path
