import json

import numpy as np
import pytest

from steerfront.cli import main


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def fake_neutral_kl(lm, *args, **kwargs):
    """kl = (m·|v|)²/2, so the command runs without the kl module and without generating."""

    def kl_of(intervention, m):
        return 0.5 * (np.asarray(m) * float(intervention.params["v"].norm())) ** 2

    return kl_of


@pytest.fixture
def no_generation(monkeypatch):
    from steerfront.scoring import priors

    monkeypatch.setattr(priors, "neutral_kl", fake_neutral_kl)


def test_layers_table_plot_and_files(capsys, tmp_path, tiny_model_dir, no_generation):
    out = tmp_path / "layers"
    argv = ["layers", "--model", str(tiny_model_dir), "--out", str(out), "-q", "--top", "2"]
    status, text, err = run(capsys, *argv)
    assert status == 0, err
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "nav", "d", "nav", "c", "d+c", "lens", "gain", "m@kl"] + [
        "rank",
        "rec",
    ]
    assert [line.split()[0] for line in lines[1:5]] == ["0", "1", "2", "3"]
    assert sum("#1" in line for line in lines[1:5]) == 1
    assert sum("#2" in line for line in lines[1:5]) == 1
    assert "recommended layers" in lines[5] and "gain at kl 0.1" in lines[5]
    assert sorted(p.name for p in out.iterdir()) == ["layers.json", "layers.png"]
    assert (out / "layers.png").read_bytes()[:4] == b"\x89PNG"
    document = json.loads((out / "layers.json").read_text())
    assert len(document["recommended"]) == 2 and document["kl"] == 0.1
    # a folder that holds anything is refused before the model loads, unless --force
    status, text, err = run(capsys, *argv)
    assert status == 2 and text == "" and err.count("\n") == 1 and "--force" in err
    status, _, err = run(capsys, *argv, "--force")
    assert status == 0, err


def test_layers_json_without_gain(capsys, tmp_path, tiny_model_dir):
    status, text, err = run(
        capsys,
        "layers",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "o"),
        "--json",
        "--no-gain",
        "--layers",
        "3,1,2",
        "--window",
        "0,1",
    )
    assert status == 0, err
    document = json.loads(text)
    assert [r["layer"] for r in document["rows"]] == [1, 2, 3]
    assert document["kl"] is None and all(r["gain"] is None for r in document["rows"])
    assert document["window"] == [0, 3] and len(document["recommended"]) == 3
    assert document["concept"] == "agreeableness" and document["train_pairs"] > 0
    row = document["rows"][0]
    assert set(row) == {"layer", "d", "c", "score", "lens", "gain", "m", "in_window"} | {
        "rank",
        "recommended",
    }
    assert row["score"] == pytest.approx(row["d"] + row["c"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--layers", "1,9"], "--layers: layer 9 is out of range (layers 0..3)"),
        (["--layers", ","], "an item is empty"),
        (["--layers", "one"], "--layers: expected comma-separated integers"),
        (["--concept", "nosuch"], "concept 'nosuch': not a built-in set"),
        (["--window", "0.9,0.2"], "--window"),
        (["--top", "0"], "--top must be at least 1"),
        (["--kl", "0"], "--kl must be a positive number"),
    ],
)
def test_layers_bad_input_is_one_line_exit_2(capsys, tmp_path, tiny_model_dir, flags, message):
    argv = ["layers", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), *flags]
    status, text, err = run(capsys, *argv)
    assert status == 2 and text == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
