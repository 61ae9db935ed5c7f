# Set-up and everyday targets. `make demo` and `make test` install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mmcli-installed
# torch/torchvision are pinned here (not in pyproject.toml) so that users keep their own
# build; these two versions are the ones the CI machines have as local files.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench bench-quality docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]' $(TORCH_PINS)
	touch $(STAMP)

demo: install
	$(BIN)/mmcli compare unimodal multimodal --seeds 3 --out runs/demo --overwrite

test: install
	$(BIN)/ruff check src/
	$(BIN)/mypy
	$(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder

bench: install
	$(BIN)/python bench/run.py

# the default comparison on every real multimodal set in ../shared/data (about an hour)
bench-quality: install
	$(BIN)/python bench/quality.py

docs: install
	$(BIN)/python -m mmcli.cli.reference > docs/cli.md

clean:
	rm -rf runs build dist src/*.egg-info
