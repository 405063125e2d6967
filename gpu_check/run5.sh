#!/usr/bin/env bash
# Fifth-round GPU check (~3 min): device tests, both layouts with the gpu stage profile, and the
# sweep of lanes and CPU helpers (gpu_cpu_helpers) against stock hdmf-zarr in the same run, and
# whole-shard writes with kvikio against D2H + host threads.
source gpu_check/setup.sh
run_gpu_tests 70
W=/tmp/hzp-bench; mkdir -p $W
timeout 60 python3 benchmarks/bench_gpu_layouts.py --workdir $W --repeats 1 --profile --output "$OUT/layouts.json" 2>&1 | tail -24
timeout 100 python3 benchmarks/gpu_tuning.py --npy $W/ephys.npy --workdir $W --streams 2,4 --helpers 4,8,12 \
  --output "$OUT/tuning.json" 2>&1 | tail -14
timeout 60 python3 benchmarks/gpu_kvikio.py --npy $W/ephys.npy --dir $W/kvikio --output "$OUT/kvikio.json" 2>&1 | tail -4
echo "GPU CHECK DONE"
