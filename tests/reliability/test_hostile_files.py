"""Hostile model folders: code they ship never runs unless the user asks for it."""

import json

import pytest

from steerfront.errors import SteerfrontError
from steerfront.lm import load_model


def test_remote_code_in_a_model_folder_is_not_executed(tmp_path, tiny_model_dir):
    folder = tmp_path / "hostile"
    folder.mkdir()
    for path in tiny_model_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    marker = tmp_path / "pwned"
    (folder / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import LlamaForCausalLM\n"
        "class Evil(LlamaForCausalLM):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    try:
        lm = load_model(str(folder))
    except SteerfrontError as exc:
        assert "\n" not in str(exc)
    else:
        assert type(lm.model).__name__ != "Evil"
    assert not marker.exists(), "code shipped with the model ran without trust_remote_code"


@pytest.mark.parametrize("spec", ["../../etc", "no-such-org/no-such-model"])
def test_unknown_specs_are_one_line(spec, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SteerfrontError) as info:
        load_model(spec)
    assert spec in str(info.value) and "\n" not in str(info.value)
