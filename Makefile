# One-command entry points. `make demo` and `make test` each set up .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup serve-setup demo test bench clean gpu-check

# The venv for this machine (tools/setup_env.py, which prints each decision and why): a torch the
# venv can already import is kept, the CPU pin torch==2.13.0 is installed only where there is none;
# on a Jetson (or SYSTEM_SITE=1) the venv sees the system's packages (JetPack's TensorRT, cv2, gi,
# NVIDIA's torch) and no extra replaces them; GStreamer comes from apt-get when run as root.
# Variables given on make's command line reach the script's environment:
#   make setup TORCH=keep|cpu|cuda|cu126   SYSTEM_SITE=1   EXTRAS=export,app
#   python3 tools/setup_env.py --print-plan  # the decisions alone, nothing installed
$(BIN)/.installed: pyproject.toml
	$(PY) tools/setup_env.py --venv $(VENV)
	touch $@

setup: $(BIN)/.installed

# Triton's server side in its own venv (pins and reasons in serve/requirements-server.txt). Where it
# cannot be installed, the Triton tests skip and say so; everything else still runs.
SERVE_VENV ?= .venv-serve
$(SERVE_VENV)/bin/.installed: serve/requirements-server.txt
	$(PY) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q -r serve/requirements-server.txt
	touch $@

serve-setup:
	@$(MAKE) --no-print-directory $(SERVE_VENV)/bin/.installed || \
		echo "serving venv $(SERVE_VENV) not installed: the Triton tests will skip"

# The main job on bundled defaults: bundled weights -> FP32 ONNX -> FP16 graph and strongly typed
# TensorRT engine (TensorRT, or TensorRT-RTX as a CPU-only build), then a parity check of the FP16
# graph against PyTorch on Set5, then the app upscaling the bundled sample clip with the `realtime`
# model (the app's video default) on the fastest path the machine has, as lcoan-doctor decides it
# through engine.trt: a TensorRT engine where TensorRT can run one on a CUDA GPU, else torch on
# CUDA, else the FP32 graph on ONNX Runtime's CPU provider; it prints which and why.
# Ends with a summary (files, parity verdict, app fps). A few minutes on a 2-core CPU.
DEMO_CLIP = samples/sample_clip.mp4 -o out/sample_clip_x2.mp4 --json out/app_summary.json
demo: setup
	$(BIN)/python -m export.to_onnx --out out/lcoan_edge_x2_fp32.onnx
	$(BIN)/python -m export.to_trt --onnx out/lcoan_edge_x2_fp32.onnx --fp16 --out out/lcoan_edge_x2_fp16.engine
	$(BIN)/python -m export.parity --onnx out/lcoan_edge_x2_fp16.onnx --limit 1 --json out/parity_fp16.json
	@backend=$$($(BIN)/python -m pipeline.doctor --demo-backend) || exit 1; set -x; \
	case $$backend in \
	  tensorrt) $(BIN)/python -m export.to_trt --weights realtime_x2 --fp16 --out out/lcoan_realtime_x2_fp16.engine && \
	    $(BIN)/python -m app $(DEMO_CLIP) --model out/lcoan_realtime_x2_fp16.engine --backend tensorrt;; \
	  torch-cuda) $(BIN)/python -m app $(DEMO_CLIP) --model realtime_x2 --backend torch --device cuda --precision fp16;; \
	  *) $(BIN)/python -m export.to_onnx --weights realtime_x2 --out out/lcoan_realtime_x2_fp32.onnx && \
	    $(BIN)/python -m app $(DEMO_CLIP) --model out/lcoan_realtime_x2_fp32.onnx --backend onnxruntime --device cpu;; \
	esac
	$(BIN)/python samples/demo_summary.py out

test: setup serve-setup
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow (subprocess CLIs, engine builds, training runs, a wheel
# install): a few minutes on 2 cores. `make test` (what CI runs) still runs them all.
.PHONY: test-fast
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# Every GPU-only check of the CUDA plugin in one command, for a bare CUDA machine (python3 with
# numpy and CUDA torch, nvcc, cmake, compute-sanitizer; no TensorRT, no network), so it does not
# depend on setup: harness build, kernel vs CPU reference, memcheck + racecheck, timing vs
# torch.sort, out/gpu_check.json; then the presets' CUDA FP16 fps at 540p->1080p (benchmarks/gpu_fps.py,
# out/gpu_fps.json); then the app on a real 540p H.264 clip to a 1080p file, torch eager and
# compiled and ORT CUDA, each beside its model-only fps (benchmarks/app.py --gpu, out/bench_app_gpu.json;
# needs PyAV, onnx and onnxruntime-gpu for every row); last, the tests marked gpu (out/gpu_tests.xml).
# Without a GPU each says so and exits 0. On a bare lent machine: tools/device_check.sh, with the
# wheels of `make device-wheels` carried in .whl/.
GPU_PY ?= python3
GPU_FPS_ARGS ?=
GPU_APP_ARGS ?=
GPU_TESTS ?= tests/test_plugins.py tests/test_app_planes.py tests/test_trt.py
gpu-check:
	$(GPU_PY) -m plugins.gpu_check; a=$$?; $(GPU_PY) -m benchmarks.gpu_fps $(GPU_FPS_ARGS); b=$$?; \
	$(GPU_PY) -m benchmarks.app --gpu --json out/bench_app_gpu.json $(GPU_APP_ARGS); c=$$?; \
	if $(GPU_PY) -c "import pytest, torch; assert torch.cuda.is_available()" 2> /dev/null; then \
	  $(GPU_PY) -m pytest -q -rs -m gpu -p no:cacheprovider --junitxml out/gpu_tests.xml $(GPU_TESTS); d=$$?; \
	else echo "gpu tests: no CUDA torch and pytest under $(GPU_PY); nothing to run"; d=0; fi; \
	m=$$(( a > b ? a : b )); m=$$(( m > c ? m : c )); exit $$(( m > d ? m : d ))

# Wheels a bare lent CUDA machine lacks (python3.12, no network): PyAV for the app rows, the
# exporter's onnx-graphsurgeon and pypng. Into .whl/ (git-ignored), which the device call carries
# and tools/device_check.sh installs. onnxruntime-gpu (255 MB) is over what such a call carries
# (64 MiB), so there the ORT CUDA row and test say it is missing.
DEVICE_WHEELS ?= av==18.1.0 onnx-graphsurgeon==0.6.1 pypng==0.20220715.0
DEVICE_PLATFORMS = --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
.PHONY: device-wheels
device-wheels:
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(DEVICE_PLATFORMS) -d .whl $(DEVICE_WHEELS)

# TensorRT fps of the presets at 540p -> 1080p on a Jetson, beside the roofline estimate, into
# out/jetson_check.json (benchmarks/jetson_check.py, docs/jetson.md); elsewhere it says so and exits 0.
# INT8 rows need calibration images: make jetson-check JETSON_CHECK_ARGS="--calib DIR".
JETSON_CHECK_ARGS ?=
.PHONY: jetson-check
jetson-check: setup
	$(BIN)/python -m benchmarks.jetson_check --out out/jetson_check.json $(JETSON_CHECK_ARGS)

bench: setup
	$(BIN)/python -m benchmarks.flops
	$(BIN)/python -m benchmarks.attention
	$(BIN)/python -m benchmarks.ort_vs_torch
	$(BIN)/python -m benchmarks.app

clean:
	rm -rf $(VENV) $(SERVE_VENV) out plugins/build
