#!/usr/bin/env bash
# Third-round GPU check (~5 min): device tests, ceilings at 1 MiB and 64 KiB chunks (nvCOMP alone
# and through our encoder), both layouts with a per-stage profile of the gpu engine, and the NWB
# ephys benchmark against stock hdmf-zarr in the same run.
source gpu_check/setup.sh
run_gpu_tests 120
W=/tmp/hzp-bench; mkdir -p $W
timeout 100 python3 benchmarks/bench_write.py --gpu --workdir $W --keep-data --repeats 2 --no-verify --cases ephys \
  --configs stock-serial,stock-jobs,threads,gpu --output "$OUT/bench_disk.json" 2>&1 | tail -8
for c in 8192,64 512,64; do
  timeout 40 python3 benchmarks/gpu_ceilings.py --npy $W/ephys-1GB-seed0.npy --chunks $c --store-dir $W/ceil \
    --out "$OUT/ceilings_ephys_${c/,/x}.json" 2>&1 | tail -12
done
timeout 110 python3 benchmarks/bench_gpu_layouts.py --workdir $W --npy $W/ephys-1GB-seed0.npy --repeats 2 --profile \
  --output "$OUT/layouts.json" 2>&1 | tail -30
echo "GPU CHECK DONE"
