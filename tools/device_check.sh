#!/usr/bin/env bash
# `make gpu-check` on a bare, lent CUDA machine, in one call: the machine has python3 with CUDA
# torch, numpy, onnx, pytest, nvcc and cmake, but no PyAV and no network. `make device-wheels`
# (run here, where PyPI is reachable) puts the missing wheels in .whl/; this script installs
# them into a scratch folder, runs the kernel checks, the model fps, the app against its
# model-only fps and the GPU tests, and copies the reports into one folder.
#
#   bash tools/device_check.sh [REPORT_DIR]     # default: $OUT if set, else out/device
#
# Exit status: the worst of make gpu-check's steps.
set -u
report=${1:-${OUT:-out/device}}
mkdir -p "$report"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/lcoan-device-site .whl/*.whl || { echo "device_check: the wheels in .whl/ did not install"; exit 1; }
  export PYTHONPATH=/tmp/lcoan-device-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi -L; nproc; python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"
  python3 -c "import av; print('av', av.__version__)"; } 2>&1 | tee "$report/machine.txt"
start=$(date +%s)
# one call has 10 minutes: the fps table is the app's model alone unless GPU_FPS_ARGS says otherwise
make -s gpu-check GPU_PY=python3 GPU_FPS_ARGS="${GPU_FPS_ARGS---models realtime}" 2>&1 | tee "$report/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "device_check: make gpu-check exit $rc after $(( $(date +%s) - start )) s" | tee -a "$report/gpu_check.log"
for f in out/gpu_check.json out/gpu_fps.json out/bench_app_gpu.json out/gpu_tests.xml; do
  [ -f "$f" ] && cp "$f" "$report/"
done
exit "$rc"
