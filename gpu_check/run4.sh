#!/usr/bin/env bash
# Fourth-round GPU check (~3.5 min): device tests, ceilings, both layouts with the gpu stage
# profile, and the lane-count sweep (benchmarks/gpu_tuning.py), each against stock hdmf-zarr
# in the same run.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
timeout 70 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_device.py tests/test_gpu_engine_device.py \
  -o addopts="" 2>&1 | tail -15
W=/tmp/hzp-bench; mkdir -p $W
timeout 60 python3 benchmarks/bench_gpu_layouts.py --workdir $W --repeats 1 --profile --output "$OUT/layouts.json" 2>&1 | tail -24
timeout 50 python3 benchmarks/gpu_tuning.py --npy $W/ephys.npy --workdir $W --streams 2,4,8,12 --output "$OUT/tuning.json" 2>&1 | tail -12
for c in 8192,64 512,64; do
  timeout 25 python3 benchmarks/gpu_ceilings.py --npy $W/ephys.npy --chunks $c --out "$OUT/ceilings_${c/,/x}.json" 2>&1 | grep -E "kernel|encode|gil|prealloc"
done
echo "GPU CHECK DONE"
