#!/usr/bin/env bash
# The GPU check: run on the GPU machine from the repo root, with .whl carried
# (scripts/fetch_gpu_wheels.sh fills it here). Needs no internet. Writes results under $OUT.
source gpu_check/setup.sh
MODE=${1:-all}
if [ "$MODE" = all ] || [ "$MODE" = tests ]; then
  run_gpu_tests 120
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
