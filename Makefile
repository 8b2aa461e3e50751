PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,viz]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/volnet train --model default --data fashion-mnist --epochs 5 --augment flip --out runs/default --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest tests --doctest-modules volnet

lint: $(STAMP)
	$(BIN)/ruff check volnet tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/bench_memory.py

clean:
	rm -rf $(VENV) runs build *.egg-info
