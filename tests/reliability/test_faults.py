"""Faults a long search meets: a worker that dies, a storage folder it cannot write, names
that would escape the storage folder."""

import json

import pyarrow.parquet as pq
import pytest

from steerfront.cli import main


def search(tmp_path, model_dir, *flags):
    argv = ["search", "--model", str(model_dir), "--storage", str(tmp_path / "runs"), "-q"]
    return main([*argv, "--layers", "1", "--steps", "6", *flags])


def test_a_dead_worker_is_retried_once_then_failed(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("STEERFRONT_FAULT", "exit:lora")
    flags = ["--name", "dying", "--trials", "4", "--forms", "vector,lora", "--json"]
    status = search(tmp_path, tiny_model_dir, *flags, "--objectives", "diffmean,sft")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0
    trials = pq.read_table(tmp_path / "runs" / "dying" / "trials.parquet").to_pylist()
    failed = [t for t in trials if t["status"] == "failed"]
    assert failed and {t["form"] for t in failed} == {"lora"}
    assert all("died" in t["error"].lower() or "actor" in t["error"].lower() for t in failed)
    assert summary["trials"] == 4 and summary["failed"] == len(failed)
    errors = list((tmp_path / "runs" / "dying").glob("*/error.txt"))
    assert errors and all(p.read_text().count("Failure #") == 2 for p in errors)  # retried once


def test_unwritable_storage_fails_before_any_trial(tmp_path, tiny_model_dir, capsys):
    storage = tmp_path / "ro"
    storage.mkdir()
    storage.chmod(0o500)
    try:
        if (storage / "probe").touch() is None:  # root ignores permissions: nothing to test
            pytest.skip("running as root: a read-only folder is still writable")
    except PermissionError:
        pass
    finally:
        (storage / "probe").unlink(missing_ok=True)
    status = main(["search", "--model", str(tiny_model_dir), "--storage", str(storage), "-q"])
    err = capsys.readouterr().err
    assert status == 2 and "is not writable" in err and err.count("\n") == 1


def test_storage_on_a_file_fails_before_any_trial(tmp_path, tiny_model_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status = main(["search", "--model", str(tiny_model_dir), "--storage", str(blocker), "-q"])
    err = capsys.readouterr().err
    assert status == 2 and f"storage folder {blocker} is not writable" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "x y"])
def test_names_cannot_escape_the_storage_folder(tmp_path, tiny_model_dir, capsys, name):
    status = search(tmp_path, tiny_model_dir, "--name", name)
    err = capsys.readouterr().err
    assert status == 2 and "search name" in err and err.count("\n") == 1
    assert not (tmp_path / "escape").exists() and not (tmp_path / "runs").exists()


def test_a_full_disk_is_refused_before_any_trial(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 2**20))
    status = search(tmp_path, tiny_model_dir, "--name", "full")
    err = capsys.readouterr().err
    assert status == 2 and "has 1 MiB free" in err and err.count("\n") == 1
    assert not (tmp_path / "runs" / "full").exists()
