#!/usr/bin/env bash
# Sixth-round GPU check (~6.5 min typical; its timeouts bound it near 10): what no device has measured yet, in one lease.
#   1. device tests (numcodecs.zlib and numcodecs.shuffle on the GPU, the shared task queue);
#   2. NWB end to end against stock hdmf-zarr in the same run (the metadata fixes on many cores),
#      with the threads engine's stage profile on 16 cores;
#   3. both layouts with the gpu stage profile;
#   4. lanes x CPU helpers (gpu_cpu_helpers) sweep;
#   5. whole-shard writes with kvikio against D2H + host threads;
#   6. NWB HDF5 -> Zarr conversion of a gzip-compressed source: stock export, threads with and
#      without workers inflating the HDF5 chunks (h5direct), and gpu;
#   7. CPU shard encoding (cpu_shard) against zarr's ShardingCodec on 16 threads.
source gpu_check/setup.sh
run_gpu_tests 70
W=/tmp/hzp-bench; mkdir -p $W
timeout 170 python3 benchmarks/bench_write.py --gpu --workdir $W --keep-data --repeats 2 --no-verify \
  --configs stock-serial,stock-jobs,threads,gpu --profile --output "$OUT/bench_disk.json" 2>&1 | tail -40
timeout 50 python3 benchmarks/bench_gpu_layouts.py --workdir $W --npy $W/ephys-1GB-seed0.npy --repeats 1 --profile \
  --output "$OUT/layouts.json" 2>&1 | tail -24
timeout 90 python3 benchmarks/gpu_tuning.py --npy $W/ephys-1GB-seed0.npy --workdir $W --streams 2,4 --helpers 4,8,12 \
  --output "$OUT/tuning.json" 2>&1 | tail -14
timeout 40 python3 benchmarks/gpu_kvikio.py --npy $W/ephys-1GB-seed0.npy --dir $W/kvikio --output "$OUT/kvikio.json" 2>&1 | tail -4
timeout 110 python3 benchmarks/bench_convert.py --workdir $W/convert --repeats 2 \
  --configs stock-export,threads,threads-h5py,threads-zstd,gpu --output "$OUT/convert.json" 2>&1 | tail -9
timeout 50 python3 benchmarks/ab_cpu_shard.py --npy $W/ephys-1GB-seed0.npy --repeats 2 --output "$OUT/cpu_shard.json" 2>&1 | tail -5
echo "GPU CHECK DONE"
