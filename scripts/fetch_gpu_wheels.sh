#!/usr/bin/env bash
# Download the wheels the GPU machine lacks into <repo>/.whl (gitignored).
#
# The GPU image (see /work/.library/device/KINDS.md) already has numpy, h5py,
# pandas, attrs, packaging, pyyaml, python-dateutil, threadpoolctl, cupy-cuda13x,
# cuda-toolkit, cuda-pathfinder, nvidia-cufile, pytest, hypothesis, tqdm.
# Everything else that nvidia-nvcomp, zarr, numcodecs, hdmf, hdmf-zarr, pynwb and
# kvikio need is listed here, one pinned version each (two versions of one
# package stop the --no-deps install there).
#
# Install line used on the device:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#
# Usage: scripts/fetch_gpu_wheels.sh [--no-kvikio]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.whl"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
[ -x "$PIP" ] || PIP="python3 -m pip"

WITH_KVIKIO=1
[ "${1:-}" = "--no-kvikio" ] && WITH_KVIKIO=0

PKGS=(
  # nvCOMP 6 Python API + its shared library
  nvidia-nvcomp-cu13==6.0.0.12
  nvidia-libnvcomp-cu13==6.0.0.12
  # zarr stack
  zarr==3.4.2
  numcodecs==0.17.1
  donfig==0.8.1.post1
  google-crc32c==1.9.0
  crc32c==2.9.post0
  msgspec==0.22.0
  typing_extensions==4.16.0
  # hdmf / hdmf-zarr / pynwb
  hdmf==6.2.0
  hdmf-zarr==0.14.0
  pynwb==4.2.0
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  referencing==0.37.0
  rpds-py==2026.9.1
  ruamel.yaml==0.19.1
  platformdirs==4.14.8
  # convert: ISA-L inflate for gzip-compressed HDF5 chunks
  isal==1.9.1
)
if [ "$WITH_KVIKIO" = 1 ]; then
  PKGS+=(kvikio-cu13==26.10.0 libkvikio-cu13==26.10.0 rapids-logger==0.3.0)
fi

PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64)
PLAT_ARGS=()
for p in "${PLATFORMS[@]}"; do PLAT_ARGS+=(--platform "$p"); done

mkdir -p "$DEST"
for pkg in "${PKGS[@]}"; do
  $PIP download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp "${PLAT_ARGS[@]}" -d "$DEST" "$pkg" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
done

# Keep exactly one version of each distribution (stale downloads of other pins would
# make the device install fail).
python3 - "$DEST" <<'PY'
import os, re, sys
from collections import defaultdict
d = sys.argv[1]
seen = defaultdict(list)
for f in sorted(os.listdir(d)):
    if f.endswith(".whl"):
        name = re.sub(r"[-_.]+", "-", f.split("-")[0]).lower()
        seen[name].append(f)
bad = {k: v for k, v in seen.items() if len(v) > 1}
if bad:
    for k, v in bad.items():
        print(f"ERROR: several wheels of {k}: {v}", file=sys.stderr)
    sys.exit(1)
PY

ls -l "$DEST"/*.whl
echo "total: $(du -cb "$DEST"/*.whl | tail -1 | cut -f1) bytes ($(du -ch "$DEST"/*.whl | tail -1 | cut -f1))"
