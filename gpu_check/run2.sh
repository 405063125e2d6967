#!/usr/bin/env bash
# Second-round GPU check: device tests, end-to-end NWB benchmark (local disk), layouts, ceilings.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
timeout 100 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_device.py tests/test_gpu_engine_device.py \
  -o addopts="" -x 2>&1 | tail -15
W=/tmp/hzp-bench; mkdir -p $W
timeout 130 python3 benchmarks/bench_write.py --gpu --workdir $W --keep-data --repeats 2 --no-verify \
  --configs stock-serial,stock-jobs,threads,gpu --output "$OUT/bench_disk.json" 2>&1 | tail -12
timeout 90 python3 benchmarks/bench_gpu_layouts.py --workdir $W --npy $W/ephys-1GB-seed0.npy --repeats 2 --output "$OUT/layouts.json" 2>&1 | tail -9
timeout 30 python3 benchmarks/gpu_ceilings.py --npy $W/ephys-1GB-seed0.npy --chunks 8192,64 --store-dir $W/ceil \
  --out "$OUT/ceilings_ephys.json" 2>&1 | tail -12
echo "GPU CHECK DONE"
