import torch

import steerfront.models
from steerfront.lm import load_model
from steerfront.models import load_checked


def test_loading_is_one_step_checking_another(tiny_model_dir, monkeypatch):
    checked = []
    monkeypatch.setattr(steerfront.models, "self_check", lambda lm: checked.append(lm.spec))
    load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    assert checked == []
    lm = load_checked(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    assert checked == [str(tiny_model_dir)] and lm.spec == str(tiny_model_dir)
