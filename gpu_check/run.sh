#!/usr/bin/env bash
# The GPU check: run on the GPU machine from the repo root, with .whl carried
# (scripts/fetch_gpu_wheels.sh fills it here). Needs no internet. Writes results under $OUT.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
nproc | tee -a "$OUT/device.txt"
MODE=${1:-all}
if [ "$MODE" = all ] || [ "$MODE" = tests ]; then
  timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_device.py tests/test_gpu_engine_device.py \
    -o addopts="" 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
fi
if [ "$MODE" = all ] || [ "$MODE" = bench ]; then
  W=/tmp/hzp-bench; mkdir -p $W /dev/shm/hzp-bench
  CFG=${BENCH_CONFIGS:-stock-serial,stock-jobs,threads,gpu}
  timeout 200 python3 benchmarks/bench_write.py --gpu --workdir $W --keep-data --repeats ${REPEATS:-2} --no-verify \
    --configs "$CFG" --output "$OUT/bench_disk.json" 2>&1 | tee "$OUT/bench_disk.log" | tail -20
  cp $W/*.npy /dev/shm/hzp-bench/ 2>/dev/null
  timeout 100 python3 benchmarks/bench_write.py --gpu --workdir /dev/shm/hzp-bench --keep-data --repeats ${REPEATS:-2} \
    --no-verify --configs "threads,gpu" --output "$OUT/bench_shm.json" 2>&1 | tee "$OUT/bench_shm.log" | tail -12
  for npy in $W/ephys*.npy $W/imaging*.npy; do
    case $npy in *ephys*) ch=8192,64 ;; *) ch=8,256,256 ;; esac
    timeout 40 python3 benchmarks/gpu_ceilings.py --npy "$npy" --chunks $ch --store-dir $W/ceil --store-dir /dev/shm/hzp-ceil \
      --out "$OUT/ceilings_$(basename $npy .npy | cut -d- -f1).json" 2>&1 | tee -a "$OUT/ceilings.log"
  done
fi
echo "GPU CHECK DONE"
