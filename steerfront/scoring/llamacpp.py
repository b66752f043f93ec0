"""Scoring pairs in llama.cpp (its C library, through llama-cpp-python) with an exported control
vector applied: the check that a GGUF export steers llama.cpp as steerfront's evaluator says.

llama.cpp computes its own logits from its own weights (the packaged GGUF's 4-bit ones, with
8-bit activations in its matrix products), so its log-odds are close to steerfront's, not
equal. The control vector reaches it as `llama-server --control-vector-scaled FILE SCALE`
hands it over: the file read as llama.cpp's loader reads it, applied from layer 1 to the last.
Needs `llama-cpp-python` (`make test` builds it into .venv).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from steerfront.data import EncodedPair
from steerfront.errors import SteerfrontError
from steerfront.methods.gguf import control_vector_data
from steerfront.scoring.logodds import LogOdds


class LlamaCpp:
    """One GGUF model in llama.cpp, logits kept for every position (for completion NLLs)."""

    def __init__(self, model: str | Path, n_ctx: int = 512, threads: int = 1) -> None:
        import llama_cpp

        self._lib = llama_cpp
        # One thread by default: llama.cpp's threads spin at each barrier, which on a busy
        # two-core machine costs far more than it gains.
        self.llm = llama_cpp.Llama(
            model_path=str(model),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=True,
            verbose=False,
        )
        self.n_ctx = n_ctx
        self.n_layers = llama_cpp.llama_model_n_layer(self.llm.model)
        self.scale = 0.0

    def steer(self, path: str | Path | None, scale: float = 1.0) -> None:
        """Apply the control vector file at `scale` (None: no control vector)."""
        width = self.llm.n_embd()
        if path is None:
            status = self._lib.llama_set_adapter_cvec(self.llm.ctx, None, 0, width, -1, -1)
            scale = 0.0
        else:
            found, data = control_vector_data(path, scale)
            if found != width:
                raise SteerfrontError(f"{path}: vectors are {found} wide, the model is {width}")
            # llama.cpp overwrites only the layers the buffer covers (and ignores any past the
            # last block): a full-length buffer leaves nothing of an earlier vector behind.
            rows = width * (self.n_layers - 1)
            data = np.concatenate([data, np.zeros(rows, dtype=np.float32)])[:rows]
            pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            status = self._lib.llama_set_adapter_cvec(
                self.llm.ctx, pointer, data.size, width, 1, self.n_layers
            )
        if status != 0:
            raise SteerfrontError(f"llama.cpp refused the control vector {path} ({status})")
        self.scale = scale
        self.llm.reset()  # nothing computed before may be reused

    def score(self, encoded: list[EncodedPair]) -> LogOdds:
        """`L_p`, `L_n` of every pair from llama.cpp's logits (the prompt run once a pair)."""
        l_p, l_n = np.zeros(len(encoded)), np.zeros(len(encoded))
        for i, pair in enumerate(encoded):
            prompt = list(pair.prompt)
            if len(prompt) + max(len(pair.positive), len(pair.negative)) > self.n_ctx:
                raise SteerfrontError(f"pair {i} is longer than llama.cpp's context ({self.n_ctx})")
            self.llm.reset()
            self.llm.eval(prompt)
            for completion, out in ((pair.positive, l_p), (pair.negative, l_n)):
                self.llm.n_tokens = len(prompt)  # drop the other completion's tokens
                self.llm.eval(list(completion))
                end = len(prompt) + len(completion)
                logits = np.asarray(self.llm.scores[len(prompt) - 1 : end - 1], dtype=np.float64)
                top = logits.max(axis=1, keepdims=True)
                logp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
                out[i] = -logp[np.arange(len(completion)), list(completion)].sum()
        n = len(encoded)
        return LogOdds(pair=np.arange(n), m=np.full(n, self.scale), l_p=l_p, l_n=l_n)

    def chat(self, prompt: str, max_tokens: int = 48) -> str:
        """The model's greedy answer to one user message (its own chat template)."""
        self.llm.reset()
        reply = self.llm.create_chat_completion(
            [{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0
        )
        return reply["choices"][0]["message"]["content"]
