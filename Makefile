# One-command entry points. `make demo` and `make test` each set up .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
	# On a GPU machine, install your CUDA torch first and skip this line.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[export,trt,app,dev]"
	touch $@

setup: $(BIN)/.installed

# The main job on bundled defaults: bundled weights -> ONNX -> FP16 strongly typed TensorRT
# engine (TensorRT, or TensorRT-RTX as a CPU-only build), then a parity check of the ONNX graph
# against PyTorch on Set5, then the app upscaling the bundled sample clip.
demo: setup
	$(BIN)/python -m export.to_trt --fp16 --out out/lcoan_edge_x2.engine
	$(BIN)/python -m export.parity --onnx out/lcoan_edge_x2.fp16.onnx --limit 3 --json out/parity_fp16.json
	$(BIN)/python -m app samples/sample_clip.mp4 -o out/sample_clip_x2.mp4 --json out/app_summary.json

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks.flops
	$(BIN)/python -m benchmarks.attention
	$(BIN)/python -m benchmarks.ort_vs_torch
	$(BIN)/python -m benchmarks.app

clean:
	rm -rf $(VENV) out plugins/build
