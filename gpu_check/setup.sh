# Sourced by the gpu_check/run*.sh scripts, from the repo root on the GPU machine (.whl carried):
# installs the carried wheels, puts them and src/ on PYTHONPATH, records the device under $OUT,
# and defines run_gpu_tests SECONDS.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
nproc | tee -a "$OUT/device.txt"

run_gpu_tests() {
  timeout "$1" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_device.py tests/test_gpu_engine_device.py \
    -o addopts="" 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
}
