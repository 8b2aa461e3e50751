PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,mpi,viz]'
	touch $(STAMP)

FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

train: $(STAMP)
	@# Fashion-MNIST from Debian's package where we may install it; else volnet downloads it (checksummed)
	@test -e $(FMNIST) || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] || \
	  { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; } || \
	  echo "note: could not install dataset-fashion-mnist; volnet will try to download Fashion-MNIST"
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
