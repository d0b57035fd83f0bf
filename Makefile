# restorecli: set-up, demo, tests and the reproducible training of the shipped weights.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch when no NVIDIA GPU is visible; otherwise pip picks torch freely.
CONSTRAINTS := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 || echo "-c constraints-cpu.txt")
DEMO := demo

.PHONY: help install demo test weights weights-regression classifier bench bench-objectives bench-finetune clean

help:
	@echo "make demo     create .venv, install, corrupt/restore/evaluate test digits with the shipped weights"
	@echo "make test     run the test suite (creates .venv if needed)"
	@echo "make weights  retrain the shipped restorer (about 105 minutes on 2 CPU cores)"
	@echo "make bench    measure the shipped model and the regression reference on all five kinds"
	@echo "make bench-objectives  compare the four objectives at equal training time (about 50 min)"
	@echo "make bench-finetune    restorer from scratch against finetuned from a generator (about 90 min)"

$(BIN)/restorecli: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e '.[test]'
	@touch $@

install: $(BIN)/restorecli

demo: install
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/python -m restorecli.demo $(DEMO)
	$(BIN)/restorecli evaluate --noise mixed --report $(DEMO)/report-mixed.json

test: install
	$(BIN)/python -m pytest -q

# The shipped weights: the exact, seeded commands, 7000 steps and then 3000 more from their final
# weights at half the learning rate. The result is copied into the package.
weights: install
	$(BIN)/restorecli train --config configs/shipped.toml --run-dir runs/shipped
	$(BIN)/restorecli train --config configs/shipped-continue.toml \
		--init-from runs/shipped/checkpoints/final.safetensors --run-dir runs/shipped-continue
	cp runs/shipped-continue/checkpoints/final.safetensors restorecli/weights/restorer-mixed.safetensors

# The same network, data, steps and two stages trained by plain regression: the reference row of
# docs/BENCHMARKS.md. Its second stage ran on one thread beside the shipped model's first stage.
weights-regression: install
	$(BIN)/restorecli train --config configs/shipped.toml --objective regression --run-dir runs/regression
	$(BIN)/restorecli train --config configs/shipped-continue.toml --objective regression --threads 1 \
		--init-from runs/regression/checkpoints/final.safetensors --run-dir runs/regression-continue

# The reference digit classifier that evaluate uses for digit accuracy: the exact, seeded command.
classifier: install
	$(BIN)/python -m restorecli.classifier --out restorecli/weights/digit-classifier.safetensors

# The protocol table of docs/BENCHMARKS.md: the shipped model beside the regression reference
# (run make weights-regression first).
bench: install
	$(BIN)/python -m bench.protocol_table --checkpoint restorecli/weights/restorer-mixed.safetensors \
		--checkpoint runs/regression-continue/checkpoints/final.safetensors --json docs/results/protocol-shipped.json

# MeanFlow, iMF, flow matching and regression at equal training time (10 minutes each, one thread).
bench-objectives: install
	$(BIN)/python -m bench.objectives --minutes 10 --out docs/results/objectives.json

# A restorer from scratch against one finetuned from a generator of the same budget.
bench-finetune: install
	$(BIN)/python -m bench.finetune_vs_scratch --out docs/results/finetune_vs_scratch

clean:
	rm -rf $(DEMO) .pytest_cache
