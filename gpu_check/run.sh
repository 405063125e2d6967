#!/usr/bin/env bash
# The GPU check. Run it from the repository root on a machine with an NVIDIA GPU:
#
#   bash gpu_check/run.sh --quick    the gpu-marked tests, then a small engine="gpu" NWB write read back
#                                    by stock hdmf-zarr and by tensorstore (bounded at 4 minutes)
#   bash gpu_check/run.sh --full     the same, then the GPU benchmarks: layouts, lanes x CPU helpers, kvikio,
#                                    convert, NWB end to end, CPU shards, ceilings, NWB on tmpfs (bounded at 8.5 min)
#   bash gpu_check/run.sh --probe    the nvCOMP facts the GPU engine relies on (gpu_check/probe_nvcomp.py);
#                                    combines with --quick or --full
#   bash gpu_check/run.sh --layouts  issue 15: on one 1 GB ephys recording, stock hdmf-zarr, threads, gpu and
#                                    gpu-lanes (no CPU helpers) on gzip-1 9.8 MB chunks (neuroconv), Blosc-zstd
#                                    4 MiB chunks, zstd 1 MiB chunks, zstd 64 KiB in 3 MiB shards; then convert
#                                    with --layout gpu-shards / gpu-blosc against default convert and stock export;
#                                    a summary with ratios (bounded at 7 minutes; combines with --quick: 9.5)
#   --cpu                            with --layouts: the same steps on small data with the CPU stand-ins
#                                    (gpu-host, threads/gpu-shards): a dry run on a machine without a GPU
#   --deadline SECONDS               stop starting steps after this long (default 240 quick, 510 full,
#                                    420 layouts, 570 quick + layouts)
#
# Needs Python >= 3.12 with numpy, cupy and the packages named at the top of scripts/fetch_gpu_wheels.sh;
# the rest comes from the wheels in .whl/ (that script fills it where pip works; carry .whl). No internet.
# Writes under $OUT (default /tmp/gpu-check-out), refreshed after every step:
#   run.log          what was printed (device, versions, the tail of each step)
#   summary.txt      one line per step: PASS / FAIL / TIMEOUT / SKIPPED and its seconds
#   results.tar.gz   each step's full log and JSON (tar -xzf results.tar.gz; copy the JSON to benchmarks/results/)
# Exit status: 0 when no step failed or timed out.
set -u

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }

QUICK=0 FULL=0 PROBE=0 LAYOUTS=0 CPU=0 DEADLINE=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --full) FULL=1 QUICK=1 ;;
    --probe) PROBE=1 ;;
    --layouts) LAYOUTS=1 ;;
    --cpu) CPU=1 ;;
    --deadline) shift; DEADLINE=${1:-}; [[ "$DEADLINE" =~ ^[0-9]+$ ]] || usage ;;
    -h|--help) usage ;;
    *) echo "gpu_check/run.sh: unknown option $1" >&2; usage ;;
  esac
  shift
done
[ $((QUICK + PROBE + LAYOUTS)) -gt 0 ] || usage
[ "$CPU" = 0 ] || [ "$LAYOUTS" = 1 ] || { echo "gpu_check/run.sh: --cpu goes with --layouts" >&2; usage; }
if [ -z "$DEADLINE" ]; then
  if [ "$FULL" = 1 ]; then DEADLINE=510; elif [ "$QUICK" = 1 ] && [ "$LAYOUTS" = 1 ]; then DEADLINE=570
  elif [ "$LAYOUTS" = 1 ]; then DEADLINE=420; else DEADLINE=240; fi
fi
[ -f pyproject.toml ] && [ -d src/hdmf_zarr_parallel ] || { echo "run gpu_check/run.sh from the repository root" >&2; exit 2; }

export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check-out}
WORK=/tmp/hzp-gpu-check            # results being collected, demo stores
DATA=/tmp/hzp-bench                # benchmark data and outputs, on local disk
RES=$WORK/results
EPHYS=$DATA/ephys-1GB-seed0.npy    # bench_write.py's name for its 1 GB ephys recording; the other benchmarks reuse it
rm -rf "$WORK"; mkdir -p "$OUT" "$RES" "$DATA"
: > "$OUT/run.log"; : > "$OUT/summary.txt"
START=$(date +%s)
FAILED=0

say() { echo "$*" | tee -a "$OUT/run.log"; }
pack() { tar -czf "$OUT/results.tar.gz.part" -C "$RES" . && mv "$OUT/results.tar.gz.part" "$OUT/results.tar.gz"; }

# step NAME LIMIT_S COMMAND...: run COMMAND under the smaller of its own limit and what the deadline leaves;
# its output goes to $RES/NAME.log, its tail to run.log.
step() {
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - ($(date +%s) - START) - 10))
  if [ "$left" -lt 20 ]; then
    printf '%-12s SKIPPED  (deadline %ss reached)\n' "$name" "$DEADLINE" | tee -a "$OUT/summary.txt" "$OUT/run.log"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say ""
  say "=== $name (limit ${limit}s): $*"
  local t0=$(date +%s) rc status
  timeout -k 10 "$limit" "$@" > "$RES/$name.log" 2>&1
  rc=$?
  tail -n 30 "$RES/$name.log" | tee -a "$OUT/run.log"
  case $rc in
    0) status=PASS ;;
    124|137) status=TIMEOUT; FAILED=1 ;;
    *) status="FAIL rc=$rc"; FAILED=1 ;;
  esac
  printf '%-12s %-8s %4ss\n' "$name" "$status" "$(($(date +%s) - t0))" | tee -a "$OUT/summary.txt" "$OUT/run.log"
  pack
}

# -- environment ---------------------------------------------------------------------------------------
say "gpu_check/run.sh $([ "$FULL" = 1 ] && echo --full || { [ "$QUICK" = 1 ] && echo --quick; }) $([ "$PROBE" = 1 ] && echo --probe) $([ "$LAYOUTS" = 1 ] && echo --layouts) $([ "$CPU" = 1 ] && echo --cpu) (deadline ${DEADLINE}s)"
say "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
say "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 4 | paste -sd ';')"
say "cpus: $(nproc), python: $(python3 --version 2>&1)"
if compgen -G ".whl/*.whl" > /dev/null; then
  step install 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
else
  say "no .whl/ here: using the installed packages (scripts/fetch_gpu_wheels.sh fills .whl)"
  export PYTHONPATH=$PWD/src
fi
step info 60 python3 -m hdmf_zarr_parallel info

# -- quick: tests and a small write read back ----------------------------------------------------------
if [ "$QUICK" = 1 ]; then
  # Every test marked gpu, wherever it lives; a module that cannot be collected here fails this step.
  step gpu-tests 180 python3 -m pytest -q -p no:cacheprovider -o addopts="" -m gpu --continue-on-collection-errors tests
  # ~0.23 GB of synthetic ephys (4 MiB zstd chunks) with engine="gpu", read back by stock NWBZarrIO and compared
  step demo 120 python3 -m hdmf_zarr_parallel demo --seconds 10 --engine gpu --workdir "$WORK/demo"
  cat > "$WORK/readback.py" <<'PY'
"""The GPU-written demo store, read by tensorstore (an independent zarr v3 reader), equals stock's store."""
import sys

import numpy as np
import zarr

key = "acquisition/ElectricalSeries/data"
ours, stock = (f"{sys.argv[1]}/demo_{name}.nwb.zarr/{key}" for name in ("parallel", "stock"))
try:
    import tensorstore as ts
except ImportError:
    print("tensorstore is not installed: read-back by tensorstore not checked")
    sys.exit(0)
print("codecs:", [c.to_dict()["name"] for c in zarr.open_array(ours, mode="r").metadata.codecs])
spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": ours}}
got = ts.open(spec, open=True, read=True).result().read().result()
want = zarr.open_array(stock, mode="r")[...]
same = got.shape == want.shape and bool(np.array_equal(got, want))
print(f"tensorstore {ts.__version__} read {got.shape} {got.dtype}: {'identical' if same else 'DIFFERENT'} to stock's store")
sys.exit(0 if same else 1)
PY
  step readback 60 python3 "$WORK/readback.py" "$WORK/demo"
  rm -rf "$WORK/demo"
fi

# -- full: the GPU benchmarks, the least measured first -------------------------------------------------
if [ "$FULL" = 1 ]; then
  # 1 GB ephys into 1 MiB chunks and into 64 KiB inner chunks in 3 MiB shards: stock queue, threads, gpu (+ stage profile)
  step layouts 90 python3 benchmarks/bench_gpu_layouts.py --workdir "$DATA/layouts" --npy "$EPHYS" --repeats 1 \
    --profile --output "$RES/layouts.json"
  # lanes (gpu_streams 2, 4) and CPU workers beside 4 lanes (gpu_cpu_helpers 4, 8, 12)
  step tuning 90 python3 benchmarks/gpu_tuning.py --npy "$EPHYS" --workdir "$DATA/tuning" --streams 2,4 \
    --helpers 4,8,12 --output "$RES/tuning.json"
  # whole shards written from device memory by kvikio, against one D2H copy plus host threads
  step kvikio 45 python3 benchmarks/gpu_kvikio.py --npy "$EPHYS" --dir "$DATA/kvikio" --output "$RES/kvikio.json"
  # NWB HDF5 (gzip + shuffle) -> NWB Zarr: stock export, threads (direct HDF5 reads / through h5py / zstd output), gpu
  step convert 110 python3 benchmarks/bench_convert.py --workdir "$DATA/convert" --repeats 2 \
    --configs stock-export,threads,threads-h5py,threads-zstd,gpu --output "$RES/convert.json"
  # NWB end to end, 1 MiB chunks: stock serial, stock number_of_jobs=N, threads, gpu
  step nwb-write 150 python3 benchmarks/bench_write.py --gpu --workdir "$DATA" --keep-data --repeats 2 --no-verify \
    --cases ephys,imaging --configs stock-serial,stock-jobs,threads,gpu --output "$RES/bench_write.json"
  # CPU shard encoding (cpu_shard) against zarr's ShardingCodec and the stock queue, on every core
  step cpu-shard 60 python3 benchmarks/ab_cpu_shard.py --npy "$EPHYS" --repeats 2 --out-dir "$DATA/ab-shard.zarr" \
    --output "$RES/cpu_shard.json"
  # nvCOMP alone, our encoder, pinned H2D, source read and store, at 1 MiB and 64 KiB chunks
  step ceil-1MiB 40 python3 benchmarks/gpu_ceilings.py --npy "$EPHYS" --chunks 8192,64 --repeats 2 \
    --store-dir "$DATA/ceil" --out "$RES/ceilings_8192x64.json"
  step ceil-64KiB 40 python3 benchmarks/gpu_ceilings.py --npy "$EPHYS" --chunks 512,64 --repeats 2 \
    --store-dir "$DATA/ceil" --out "$RES/ceilings_512x64.json"
  # the ephys NWB write with the store on tmpfs (/dev/shm): what the local disk costs threads and gpu
  SHM=/dev/shm/hzp-bench
  step nwb-shm 60 bash -c "mkdir -p $SHM && cp '$EPHYS' $SHM/ && exec python3 benchmarks/bench_write.py --gpu \
    --workdir $SHM --keep-data --repeats 2 --no-verify --cases ephys --configs threads,gpu --output '$RES/bench_write_shm.json'"
  rm -rf "$SHM"
fi

# -- layouts: issue 15's claims, on the same data, against stock and threads in the same run -------------
if [ "$LAYOUTS" = 1 ]; then
  if [ "$CPU" = 1 ]; then  # a dry run without a GPU: small data, HostLane for the GPU data path
    LGB=0.05 LSEC=1 GPUCFG=gpu-host LEPHYS=$DATA/ephys-0.05GB.npy
    CONVCFG=stock-export,threads,threads/gpu-shards,threads/gpu-blosc
  else
    LGB=1 LSEC=20 GPUCFG=gpu,gpu-lanes LEPHYS=$EPHYS
    CONVCFG=stock-export,threads,gpu,gpu/gpu-shards,gpu/gpu-blosc,threads/gpu-shards
  fi
  # the new layouts first (the least measured): gzip level 1 in neuroconv's 9.8 MB chunks, Blosc-zstd 4 MiB
  # chunks; the first step also writes the 1 GB recording (reused after)
  step lay-new 150 python3 benchmarks/bench_gpu_layouts.py --workdir "$DATA/layouts" --npy "$LEPHYS" --gb "$LGB" \
    --repeats 1 --layouts gzip10MB,blosc4MiB --configs "stock-queue,threads,$GPUCFG" --output "$RES/layouts-gzip-blosc.json"
  # convert (gzip + shuffle NWB HDF5, 0.5 GB ephys + imaging): stock export, default convert (threads, gpu), the
  # two GPU presets on the gpu engine, and gpu-shards on threads (what the layout alone does)
  step lay-convert 140 python3 benchmarks/bench_convert.py --workdir "$DATA/convert" --seconds "$LSEC" --repeats 1 \
    --configs "$CONVCFG" --output "$RES/layouts-convert.json"
  # zstd 1 MiB chunks and 64 KiB inner chunks in 3 MiB shards (measured before: the same run gives the ratios)
  step lay-zstd 120 python3 benchmarks/bench_gpu_layouts.py --workdir "$DATA/layouts" --npy "$LEPHYS" --gb "$LGB" \
    --repeats 1 --layouts 1MiB,shard3MiB --configs "stock-queue,threads,$GPUCFG" --output "$RES/layouts-zstd.json"
  rm -rf "$DATA/layouts/out.zarr"
  say ""
  say "=== layouts summary (MB/s, and ratios to stock hdmf-zarr and to threads in the same run):"
  timeout 30 python3 gpu_check/layouts_summary.py "$RES" "$RES/layouts-summary.json" 2>&1 | tee -a "$OUT/run.log"
  cp "$RES/layouts-summary.json" "$OUT/layouts-summary.json" 2>/dev/null
fi

# -- probe: nvCOMP's API, CPU-readability of its output, raw speed ---------------------------------------
if [ "$PROBE" = 1 ]; then
  step probe 180 env OUT="$RES" python3 gpu_check/probe_nvcomp.py
fi

pack
say ""
say "summary ($(($(date +%s) - START)) s):"
tee -a "$OUT/run.log" < "$OUT/summary.txt"
say "GPU CHECK DONE"
exit "$FAILED"
