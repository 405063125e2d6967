#!/usr/bin/env bash
# Second-round GPU check: device tests, end-to-end NWB benchmark (local disk), layouts, ceilings.
source gpu_check/setup.sh
run_gpu_tests 100
W=/tmp/hzp-bench; mkdir -p $W
timeout 130 python3 benchmarks/bench_write.py --gpu --workdir $W --keep-data --repeats 2 --no-verify \
  --configs stock-serial,stock-jobs,threads,gpu --output "$OUT/bench_disk.json" 2>&1 | tail -12
timeout 90 python3 benchmarks/bench_gpu_layouts.py --workdir $W --npy $W/ephys-1GB-seed0.npy --repeats 2 --output "$OUT/layouts.json" 2>&1 | tail -9
timeout 30 python3 benchmarks/gpu_ceilings.py --npy $W/ephys-1GB-seed0.npy --chunks 8192,64 --store-dir $W/ceil \
  --out "$OUT/ceilings_ephys.json" 2>&1 | tail -12
echo "GPU CHECK DONE"
