#!/usr/bin/env bash
# Fourth-round GPU check (~3.5 min): device tests, ceilings, both layouts with the gpu stage
# profile, and the lane-count sweep (benchmarks/gpu_tuning.py), each against stock hdmf-zarr
# in the same run.
source gpu_check/setup.sh
run_gpu_tests 70
W=/tmp/hzp-bench; mkdir -p $W
timeout 60 python3 benchmarks/bench_gpu_layouts.py --workdir $W --repeats 1 --profile --output "$OUT/layouts.json" 2>&1 | tail -24
timeout 50 python3 benchmarks/gpu_tuning.py --npy $W/ephys.npy --workdir $W --streams 2,4,8,12 --output "$OUT/tuning.json" 2>&1 | tail -12
for c in 8192,64 512,64; do
  timeout 25 python3 benchmarks/gpu_ceilings.py --npy $W/ephys.npy --chunks $c --out "$OUT/ceilings_${c/,/x}.json" 2>&1 | grep -E "kernel|encode|gil|prealloc"
done
echo "GPU CHECK DONE"
