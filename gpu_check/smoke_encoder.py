"""Quick device check of hdmf_zarr_parallel.gpu.encoder.NvcompBatchEncoder against numcodecs (CPU decode)."""

import sys
import traceback

import numpy as np

sys.path.insert(0, "src")
import zarr  # noqa: E402

from hdmf_zarr_parallel.gpu.encoder import NvcompBatchEncoder  # noqa: E402
from hdmf_zarr_parallel.gpu.plan import classify  # noqa: E402

codecs = {"zstd": zarr.codecs.ZstdCodec(level=3), "gzip": zarr.codecs.GzipCodec(level=5), "lz4": zarr.codecs.numcodecs.LZ4()}
import cupy  # noqa: E402
import numcodecs  # noqa: E402

cpu = {"zstd": numcodecs.Zstd(), "gzip": numcodecs.GZip(), "lz4": numcodecs.LZ4()}
ok = True
for name, codec in codecs.items():
    for dtype in ("int16", "float32", "uint8"):
        try:
            arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(1000, 50), chunks=(100, 50), dtype=dtype, compressors=codec)
            plan = classify(arr)
            data = (np.cumsum(np.random.default_rng(0).normal(0, 3, (10, 100, 50)), axis=1)).astype(dtype)
            with NvcompBatchEncoder(plan) as enc:
                out = enc.encode([cupy.asarray(d) for d in data])
            good = all(np.array_equal(np.frombuffer(cpu[name].decode(bytes(o)), dtype=dtype).reshape(100, 50), d) for o, d in zip(out, data))
            print(f"encoder {name:5s} {dtype:8s} {'OK' if good else 'MISMATCH'} ratio={data.nbytes / sum(len(o) for o in out):.2f}")
            ok &= good
        except Exception:
            ok = False
            print(f"encoder {name} {dtype} ERROR"); traceback.print_exc()
print("ENCODER SMOKE", "PASS" if ok else "FAIL")
