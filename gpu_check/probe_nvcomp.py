#!/usr/bin/env python3
"""Probe nvCOMP 6 (``nvidia.nvcomp``) on a GPU machine: API names, CPU-readability, speed.

Standalone: imports only numpy, cupy, nvidia.nvcomp, numcodecs (and optionally zarr,
kvikio). Run it on the device as ``python3 gpu_check/probe_nvcomp.py``; it prints a
summary table and, when ``$OUT`` is set, writes ``$OUT/probe_nvcomp.json``.

What it answers:

* which algorithm names / keyword arguments the Codec accepts (tries alternatives);
* whether nvCOMP RAW output of Zstd, Gzip and LZ4 decodes bit-exactly with the stock
  numcodecs CPU codecs (zstd frame, gzip member, numcodecs' LZ4 = 4-byte LE size +
  raw block), over dtypes and chunk sizes (incl. odd ones), one frame/member per chunk,
  whether the zstd frame carries the content size;
* what Deflate RAW is (raw deflate? zlib?);
* encode throughput (batch of ~256 MiB of 1 MiB int16 chunks, and 64 KiB chunks),
  pinned vs pageable H2D copy throughput, compression ratio next to numcodecs CPU.

Every sub-check is wrapped so one failure does not stop the others.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
import zlib

T0 = time.perf_counter()
TIME_BUDGET_S = float(os.environ.get("PROBE_TIME_BUDGET_S", "150"))

RESULTS: dict = {
    "env": {},
    "api": {},
    "names": {},
    "conformance": [],
    "frames": {},
    "gzip": {},
    "deflate": {},
    "throughput": {},
    "h2d": {},
    "ratio": {},
    "kvikio": {},
    "errors": [],
}


def log(*args) -> None:
    print(f"[{time.perf_counter() - T0:7.2f}s]", *args, flush=True)


def over_budget() -> bool:
    return time.perf_counter() - T0 > TIME_BUDGET_S


def record_error(where: str, exc: BaseException) -> None:
    tb = traceback.format_exc(limit=6)
    RESULTS["errors"].append({"where": where, "error": f"{type(exc).__name__}: {exc}", "trace": tb})
    log(f"ERROR in {where}: {type(exc).__name__}: {exc}")


def write_json() -> None:
    out = os.environ.get("OUT")
    if not out:
        return
    try:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "probe_nvcomp.json"), "w") as f:
            json.dump(RESULTS, f, indent=1, default=str)
        log(f"wrote {os.path.join(out, 'probe_nvcomp.json')}")
    except Exception as exc:  # pragma: no cover - best effort
        log(f"could not write JSON: {exc}")


# ----------------------------------------------------------------------------------------
# imports
# ----------------------------------------------------------------------------------------
try:
    import numpy as np
except Exception as exc:  # pragma: no cover
    print(f"probe_nvcomp: numpy is not importable ({exc}); nothing to probe.", file=sys.stderr)
    sys.exit(2)

try:
    import cupy
except Exception as exc:
    print(
        f"probe_nvcomp: cupy is not importable ({type(exc).__name__}: {exc}).\n"
        "This probe needs an NVIDIA GPU with cupy and nvidia-nvcomp installed; run it on the device.",
        file=sys.stderr,
    )
    sys.exit(2)

try:
    from nvidia import nvcomp
except Exception as exc:
    print(
        f"probe_nvcomp: nvidia.nvcomp is not importable ({type(exc).__name__}: {exc}).\n"
        "Install nvidia-nvcomp-cu13 (and nvidia-libnvcomp-cu13), e.g. from the .whl folder.",
        file=sys.stderr,
    )
    sys.exit(3)

try:
    import numcodecs
    from numcodecs import LZ4, GZip, Zstd
except Exception as exc:
    print(f"probe_nvcomp: numcodecs is not importable ({exc}).", file=sys.stderr)
    sys.exit(4)


# ----------------------------------------------------------------------------------------
# environment
# ----------------------------------------------------------------------------------------
def probe_env() -> None:
    env = RESULTS["env"]
    env["python"] = sys.version.split()[0]
    env["platform"] = platform.platform()
    env["numpy"] = np.__version__
    env["cupy"] = cupy.__version__
    env["numcodecs"] = numcodecs.__version__
    env["nvcomp"] = getattr(nvcomp, "__version__", None)
    env["nvcomp_cuda"] = getattr(nvcomp, "__cuda_version__", None)
    env["nvcomp_file"] = getattr(nvcomp, "__file__", None)
    try:
        import zarr

        env["zarr"] = zarr.__version__
    except Exception as exc:
        env["zarr"] = f"not importable: {exc}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        env["device_count"] = n
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        env["device_name"] = name.decode() if isinstance(name, bytes) else str(name)
        env["device_mem_GiB"] = round(props["totalGlobalMem"] / 2**30, 1)
        env["sm_count"] = props.get("multiProcessorCount")
        env["cc"] = f"{props.get('major')}.{props.get('minor')}"
        env["driver_version"] = cupy.cuda.runtime.driverGetVersion()
        env["runtime_version"] = cupy.cuda.runtime.runtimeGetVersion()
    except Exception as exc:
        record_error("env/device", exc)
    log("env:", json.dumps(env))


# ----------------------------------------------------------------------------------------
# codec construction with fallbacks
# ----------------------------------------------------------------------------------------
ALGO_NAMES = {
    "zstd": ["Zstd", "zstd", "ZSTD"],
    "gzip": ["Gzip", "gzip", "GZIP", "GZip"],
    "lz4": ["LZ4", "lz4", "Lz4"],
    "deflate": ["Deflate", "deflate", "DEFLATE"],
}
STREAM = None


def make_codec(algo: str, chunk_nbytes: int | None = None, use_stream: bool = True, **extra):
    """Return (codec, description). Tries name variants and keyword fallbacks; records what worked.

    ``chunk_nbytes`` is rounded up to 4 KiB (as the package's encoder does) and passed as
    ``uncomp_chunk_size`` so that a chunk is never split."""
    errors = []
    if chunk_nbytes:
        chunk_nbytes = min(-(-int(chunk_nbytes) // 4096) * 4096, 1 << 24 if algo == "lz4" else (1 << 31) - 1)
    raw = nvcomp.BitstreamKind.RAW
    for name in ALGO_NAMES[algo]:
        kw_variants = []
        base = {"algorithm": name, "bitstream_kind": raw, **extra}
        if use_stream and STREAM is not None:
            with_stream = dict(base, cuda_stream=STREAM.ptr)
            if chunk_nbytes:
                kw_variants.append(dict(with_stream, uncomp_chunk_size=chunk_nbytes))
            kw_variants.append(with_stream)
        if chunk_nbytes:
            kw_variants.append(dict(base, uncomp_chunk_size=chunk_nbytes))
        kw_variants.append(base)
        for kw in kw_variants:
            try:
                codec = nvcomp.Codec(**kw)
                desc = {k: (str(v) if k != "cuda_stream" else "stream.ptr") for k, v in kw.items()}
                RESULTS["names"].setdefault(algo, desc)
                return codec, desc
            except Exception as exc:
                errors.append(f"{kw.get('algorithm')} {sorted(kw)}: {type(exc).__name__}: {exc}")
    RESULTS["names"].setdefault(algo + "_failures", errors)
    raise RuntimeError(f"no Codec variant worked for {algo}: {errors[-1] if errors else '?'}")


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------
DTYPES = ["uint8", "int16", "uint16", "int32", "float32", "float64"]


def gen_chunk(dtype: str, nbytes: int, kind: str, seed: int):
    """A realistic (noise-like but compressible) chunk on the GPU, as a C-contiguous cupy array."""
    dt = np.dtype(dtype)
    n = max(1, nbytes // dt.itemsize)
    rs = cupy.random.RandomState(seed)
    if kind == "zeros":
        return cupy.zeros(n, dtype=dt)
    if kind == "const":
        return cupy.full(n, 7, dtype=dt)
    if kind == "random":
        raw = rs.randint(0, 256, size=n * dt.itemsize, dtype=cupy.int32).astype(cupy.uint8)
        arr = raw.view(dt)
        if dt.kind == "f":  # avoid NaN payload oddities: still bytes-exact, but keep it simple
            arr = cupy.nan_to_num(arr)
        return cupy.ascontiguousarray(arr)
    steps = rs.randint(-6, 7, size=n, dtype=cupy.int32)
    walk = cupy.cumsum(steps, dtype=cupy.int64)
    noise = rs.randint(-2, 3, size=n, dtype=cupy.int32).astype(cupy.int64)
    if dt.kind in "iu":
        if dt.itemsize == 1:
            v = (walk + noise) % 256
        elif dt.kind == "u":
            v = cupy.abs(walk * 3 + noise) % (2 ** min(8 * dt.itemsize, 31))
        else:
            lim = 2 ** (8 * dt.itemsize - 2)
            v = ((walk * 5 + noise) % lim) - lim // 2
        return cupy.ascontiguousarray(v.astype(dt))
    t = cupy.arange(n, dtype=cupy.float64)
    v = cupy.sin(t * 0.003) * 500.0 + walk * 0.25 + noise * 0.0625
    v = cupy.around(v * 16.0) / 16.0
    return cupy.ascontiguousarray(v.astype(dt))


def as_u8(a):
    return a.reshape(-1).view(cupy.uint8)


# ----------------------------------------------------------------------------------------
# encode + bring back to host
# ----------------------------------------------------------------------------------------
def nv_array_ptr(arr) -> int:
    cai = arr.__cuda_array_interface__
    return int(cai["data"][0])


def batch_to_host(enc, sizes) -> list[bytes]:
    """Copy every entry of an encoded (device) BatchArray to host bytes."""
    out = []
    try:
        for i, n in enumerate(sizes):
            host = np.empty(int(n), dtype=np.uint8)
            if n:
                cupy.cuda.runtime.memcpy(host.ctypes.data, nv_array_ptr(enc[i]), int(n), 2)  # D2H
            out.append(host.tobytes())
        RESULTS["api"].setdefault("d2h_path", "enc[i].__cuda_array_interface__ + cudaMemcpy")
        return out
    except Exception as exc:
        RESULTS["api"].setdefault("d2h_cai_error", f"{type(exc).__name__}: {exc}")
    cpu = enc.cpu()
    out = [bytes(memoryview(cpu[i]))[: int(n)] for i, n in enumerate(sizes)]
    RESULTS["api"].setdefault("d2h_path", "enc.cpu() + bytes(memoryview(entry))")
    return out


def encode_batch(codec, chunks, typed: bool = False):
    """One batched encode call; returns (host_bytes_list, sizes)."""
    srcs = [c if typed else as_u8(c) for c in chunks]
    try:
        batch = nvcomp.as_arrays(srcs, cuda_stream=STREAM.ptr)
    except TypeError:
        batch = nvcomp.as_arrays(srcs)
    enc = codec.encode(batch)
    sizes = list(enc.buffer_sizes)
    return batch_to_host(enc, sizes), sizes


# ----------------------------------------------------------------------------------------
# bitstream inspection
# ----------------------------------------------------------------------------------------
def zstd_frames(buf: bytes) -> list[dict]:
    pos, frames = 0, []
    while pos < len(buf):
        magic = int.from_bytes(buf[pos : pos + 4], "little")
        if 0x184D2A50 <= magic <= 0x184D2A5F:
            size = int.from_bytes(buf[pos + 4 : pos + 8], "little")
            frames.append({"skippable": True, "size": size})
            pos += 8 + size
            continue
        if magic != 0xFD2FB528:
            raise ValueError(f"bad zstd magic {magic:#x} at offset {pos}")
        fhd = buf[pos + 4]
        fcs_flag, single, checksum, dict_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
        p = pos + 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
        fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
        fcs = int.from_bytes(buf[p : p + fcs_size], "little") if fcs_size else None
        if fcs_size == 2:
            fcs += 256
        p += fcs_size
        nblocks = 0
        btypes = set()
        while True:
            bh = int.from_bytes(buf[p : p + 3], "little")
            p += 3
            last, btype, bsize = bh & 1, (bh >> 1) & 3, bh >> 3
            if btype == 3:
                raise ValueError("reserved zstd block type")
            btypes.add(("raw", "rle", "compressed")[btype])
            p += 1 if btype == 1 else bsize
            nblocks += 1
            if last:
                break
        if checksum:
            p += 4
        frames.append(
            {
                "content_size": fcs,
                "single_segment": bool(single),
                "checksum": bool(checksum),
                "dict_id": bool(dict_flag),
                "blocks": nblocks,
                "block_types": sorted(btypes),
            }
        )
        pos = p
    if pos != len(buf):
        raise ValueError(f"zstd frames end at {pos}, buffer has {len(buf)} bytes")
    return frames


def gzip_members(buf: bytes) -> list[dict]:
    members, rest = [], buf
    while rest:
        if rest[:2] != b"\x1f\x8b":
            raise ValueError(f"no gzip magic (starts {rest[:4].hex()})")
        hdr = {
            "method": rest[2],
            "flags": rest[3],
            "mtime": int.from_bytes(rest[4:8], "little"),
            "xfl": rest[8],
            "os": rest[9],
        }
        d = zlib.decompressobj(31)
        d.decompress(rest)
        if not d.eof:
            raise ValueError("truncated gzip member")
        members.append(hdr)
        rest = d.unused_data
    return members


def lz4_frame(raw: bytes, nbytes: int) -> bytes:
    return int(nbytes).to_bytes(4, "little") + raw


def try_decodes(algo: str, blob: bytes, expected: bytes) -> dict:
    """Decode with the stock CPU codecs; return which readers gave back `expected` exactly."""
    res = {}

    def attempt(name, fn):
        try:
            out = bytes(memoryview(fn()).cast("B"))
            res[name] = out == expected
        except Exception as exc:
            res[name] = f"{type(exc).__name__}: {str(exc)[:120]}"

    if algo == "zstd":
        attempt("numcodecs.Zstd", lambda: Zstd().decode(blob))
    elif algo == "gzip":
        attempt("numcodecs.GZip", lambda: GZip().decode(blob))
        attempt("zlib.gzip(wbits=31)", lambda: zlib.decompress(blob, 31))
        attempt("zlib.raw(wbits=-15)", lambda: zlib.decompress(blob, -15))
    elif algo == "lz4":
        attempt("numcodecs.LZ4+header", lambda: LZ4().decode(lz4_frame(blob, len(expected))))
        attempt("numcodecs.LZ4(as-is)", lambda: LZ4().decode(blob))
    elif algo == "deflate":
        attempt("zlib.raw(wbits=-15)", lambda: zlib.decompress(blob, -15))
        attempt("zlib(wbits=15)", lambda: zlib.decompress(blob, 15))
        attempt("zlib.gzip(wbits=31)", lambda: zlib.decompress(blob, 31))
    return res


PRIMARY_READER = {
    "zstd": "numcodecs.Zstd",
    "gzip": "numcodecs.GZip",
    "lz4": "numcodecs.LZ4+header",
    "deflate": "zlib.raw(wbits=-15)",
}


# ----------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------
def probe_api_surface() -> None:
    api = RESULTS["api"]
    api["module_names"] = sorted(n for n in dir(nvcomp) if not n.startswith("_"))
    api["codec_methods"] = sorted(n for n in dir(nvcomp.Codec) if not n.startswith("_"))
    api["batcharray_methods"] = sorted(n for n in dir(nvcomp.BatchArray) if not n.startswith("_"))
    api["bitstream_kinds"] = [n for n in dir(nvcomp.BitstreamKind) if n.isupper()]


def probe_basic_single() -> None:
    """Single-array encode: output kind, dtype, sizes, max size query."""
    api = RESULTS["api"]
    codec, _ = make_codec("zstd", 1 << 20)
    x = gen_chunk("int16", 1 << 20, "walk", 1)
    arr = nvcomp.as_array(as_u8(x), cuda_stream=STREAM.ptr)
    api["as_array_buffer_kind"] = str(arr.buffer_kind)
    enc = codec.encode(arr)
    api["single_encode_type"] = type(enc).__name__
    api["single_encode_buffer_kind"] = str(enc.buffer_kind)
    api["single_encode_dtype"] = str(enc.dtype)
    api["single_encode_shape"] = list(enc.shape)
    api["single_encode_buffer_size"] = int(enc.buffer_size)
    api["single_encode_capacity"] = int(enc.capacity)
    try:
        api["max_comp_size_1MiB_zstd"] = int(codec.get_max_comp_buffer_size(arr))
        api["required_comp_alignment_zstd"] = int(codec.get_required_compression_alignment())
    except Exception as exc:
        record_error("api/max_comp_size", exc)
    host = bytes(memoryview(enc.cpu()))
    api["single_encode_len_host"] = len(host)
    api["single_encode_decodes_with_numcodecs"] = bytes(Zstd().decode(host)) == cupy.asnumpy(as_u8(x)).tobytes()
    # batch surface
    batch = nvcomp.as_arrays([as_u8(x), as_u8(x[:1000])], cuda_stream=STREAM.ptr)
    out = codec.encode(batch)
    api["batch_encode_type"] = type(out).__name__
    api["batch_len"] = len(out)
    api["batch_buffer_sizes_type"] = type(out.buffer_sizes).__name__
    e0 = out[0]
    api["batch_entry_type"] = type(e0).__name__
    api["batch_entry_buffer_kind"] = str(e0.buffer_kind)
    api["batch_entry_dtype"] = str(e0.dtype)
    api["batch_entry_shape"] = list(e0.shape)
    api["batch_entry_cai_keys"] = sorted(e0.__cuda_array_interface__)
    api["batch_entry_cai_shape"] = list(e0.__cuda_array_interface__["shape"])
    log("api:", {k: v for k, v in api.items() if not k.endswith("names") and not k.endswith("methods")})


def probe_conformance() -> None:
    sizes = [("64KiB", 64 * 1024), ("1MiB", 1 << 20), ("odd100003", 100003)]
    for algo in ("zstd", "gzip", "lz4"):
        for dtype in DTYPES:
            for label, nbytes in sizes:
                if over_budget():
                    log("time budget reached: skipping rest of conformance")
                    return
                row = {"algo": algo, "dtype": dtype, "size": label}
                try:
                    codec, _ = make_codec(algo, nbytes)
                    kinds = ["walk", "walk", "walk", "zeros", "const", "random"]
                    chunks = [gen_chunk(dtype, nbytes, k, 100 + i) for i, k in enumerate(kinds)]
                    # views at unaligned offsets of one buffer are tested separately (misaligned)
                    try:
                        blobs, enc_sizes = encode_batch(codec, chunks)
                    except Exception as exc:
                        row["first_try_error"] = f"{type(exc).__name__}: {exc}"
                        codec, _ = make_codec(algo, None)
                        blobs, enc_sizes = encode_batch(codec, chunks)
                        row["retried_without_uncomp_chunk_size"] = True
                    ok, details = True, []
                    for c, blob, k in zip(chunks, blobs, kinds, strict=True):
                        expected = cupy.asnumpy(as_u8(c)).tobytes()
                        dec = try_decodes(algo, blob, expected)
                        good = dec.get(PRIMARY_READER[algo]) is True
                        ok &= good
                        if not good:
                            details.append({"kind": k, "decoders": dec})
                    raw_total = sum(int(c.nbytes) for c in chunks[:3])
                    row["ok"] = ok
                    row["ratio_walk"] = round(raw_total / max(1, sum(enc_sizes[:3])), 3)
                    row["ratio_random"] = round(int(chunks[5].nbytes) / max(1, enc_sizes[5]), 4)
                    if algo == "zstd":
                        fr = zstd_frames(blobs[0])
                        row["frames"] = len(fr)
                        row["fcs"] = fr[0]["content_size"]
                        row["checksum_flag"] = fr[0]["checksum"]
                    elif algo == "gzip":
                        try:
                            row["members"] = len(gzip_members(blobs[0]))
                        except Exception as exc:
                            row["members"] = f"{exc}"
                    if details:
                        row["failures"] = details[:2]
                except Exception as exc:
                    row["ok"] = False
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    record_error(f"conformance/{algo}/{dtype}/{label}", exc)
                RESULTS["conformance"].append(row)
                log("conformance", row)


def probe_frames_and_chunking() -> None:
    """One frame/member per chunk? Does the default uncomp_chunk_size (64 KiB) split 1 MiB inputs?"""
    fr = RESULTS["frames"]
    x = [gen_chunk("int16", 4 << 20, "walk", 7), gen_chunk("int16", 1 << 20, "walk", 8)]
    for algo in ("zstd", "gzip", "lz4"):
        for variant, chunk_size in (("default_uncomp_chunk_size", None), ("uncomp_chunk_size=nbytes", 4 << 20)):
            key = f"{algo}/{variant}"
            try:
                codec, desc = make_codec(algo, chunk_size)
                blobs, sizes = encode_batch(codec, x)
                info = {"codec_kwargs": desc, "sizes": sizes}
                exp = [cupy.asnumpy(as_u8(c)).tobytes() for c in x]
                info["decodes"] = [
                    try_decodes(algo, b, e).get(PRIMARY_READER[algo]) for b, e in zip(blobs, exp, strict=True)
                ]
                if algo == "zstd":
                    frames = zstd_frames(blobs[0])
                    info["frames_4MiB"] = len(frames)
                    info["frame0"] = frames[0]
                elif algo == "gzip":
                    try:
                        m = gzip_members(blobs[0])
                        info["members_4MiB"] = len(m)
                        info["header0"] = m[0]
                    except Exception as exc:
                        info["members_4MiB"] = str(exc)
                fr[key] = info
                log("frames", key, info)
            except Exception as exc:
                fr[key] = {"error": f"{type(exc).__name__}: {exc}"}
                record_error(f"frames/{key}", exc)
    # typed input (int16 arrays instead of uint8 views): same bytes?
    try:
        codec, _ = make_codec("lz4", 1 << 20)
        b_u8, _ = encode_batch(codec, [x[1]])
        b_typed, _ = encode_batch(codec, [x[1]], typed=True)
        exp = cupy.asnumpy(as_u8(x[1])).tobytes()
        fr["lz4_typed_input_same_bytes"] = b_u8[0] == b_typed[0]
        fr["lz4_typed_input_decodes"] = try_decodes("lz4", b_typed[0], exp).get(PRIMARY_READER["lz4"])
    except Exception as exc:
        record_error("frames/typed_input", exc)
    # zstd: does numcodecs need the content size? craft a frame without FCS from the GPU one.
    try:
        codec, _ = make_codec("zstd", 1 << 20)
        blobs, _ = encode_batch(codec, [x[1]])
        f0 = zstd_frames(blobs[0])[0]
        fr["zstd_has_content_size"] = f0["content_size"] is not None
        fr["zstd_content_size_matches"] = f0["content_size"] == int(x[1].nbytes)
    except Exception as exc:
        record_error("frames/zstd_fcs", exc)


def probe_misaligned() -> None:
    """Chunks that are views at odd byte offsets of one buffer: accepted? correct?"""
    fr = RESULTS["frames"]
    base = gen_chunk("uint8", 4 * 7475 + 16, "walk", 21)
    for algo in ("zstd", "gzip", "lz4"):
        key = f"misaligned/{algo}"
        try:
            codec, _ = make_codec(algo, 7475)
            views = [base[1 + i * 7475 : 1 + (i + 1) * 7475] for i in range(4)]
            blobs, _ = encode_batch(codec, views)
            exp = [cupy.asnumpy(v).tobytes() for v in views]
            fr[key] = [try_decodes(algo, b, e).get(PRIMARY_READER[algo]) for b, e in zip(blobs, exp, strict=True)]
        except Exception as exc:
            fr[key] = f"{type(exc).__name__}: {exc}"
        log("misaligned", key, fr[key])


def probe_gzip_details() -> None:
    g = RESULTS["gzip"]
    x = gen_chunk("int16", 1 << 20, "walk", 11)
    exp = cupy.asnumpy(as_u8(x)).tobytes()
    for level in (None, 0, 1, 2, 4, 5):
        key = f"algorithm_type={level}"
        try:
            extra = {} if level is None else {"algorithm_type": level}
            codec, _ = make_codec("gzip", 1 << 20, **extra)
            blobs, sizes = encode_batch(codec, [x])
            g[key] = {
                "size": sizes[0],
                "ratio": round(len(exp) / sizes[0], 3),
                "head": blobs[0][:12].hex(),
                "decoders": try_decodes("gzip", blobs[0], exp),
            }
        except Exception as exc:
            g[key] = {"error": f"{type(exc).__name__}: {exc}"}
    log("gzip:", g)
    d = RESULTS["deflate"]
    try:
        codec, _ = make_codec("deflate", 1 << 20)
        blobs, sizes = encode_batch(codec, [x])
        d["size"] = sizes[0]
        d["head"] = blobs[0][:8].hex()
        d["decoders"] = try_decodes("deflate", blobs[0], exp)
    except Exception as exc:
        d["error"] = f"{type(exc).__name__}: {exc}"
    log("deflate:", d)


def ephys_batch(total_bytes: int, chunk_bytes: int, seed: int = 3):
    """int16 ephys-like (random walk + noise) data cut into C-contiguous chunks on the GPU."""
    n = total_bytes // 2
    rs = cupy.random.RandomState(seed)
    walk = cupy.cumsum(rs.randint(-4, 5, size=n, dtype=cupy.int32), dtype=cupy.int32)
    data = ((walk % 2000) - 1000 + rs.randint(-3, 4, size=n, dtype=cupy.int32)).astype(cupy.int16)
    per = chunk_bytes // 2
    return data, [data[i * per : (i + 1) * per] for i in range(n // per)]


def time_encode(codec, chunks, reps: int = 3) -> dict:
    srcs = [as_u8(c) for c in chunks]
    batch = nvcomp.as_arrays(srcs, cuda_stream=STREAM.ptr)
    enc = codec.encode(batch)  # warm-up (allocations, kernels)
    sizes = list(enc.buffer_sizes)
    del enc
    ev0, ev1 = cupy.cuda.Event(), cupy.cuda.Event()
    gpu_ms, wall_ms = [], []
    for _ in range(reps):
        STREAM.synchronize()
        t = time.perf_counter()
        ev0.record(STREAM)
        enc = codec.encode(batch)
        ev1.record(STREAM)
        sizes = list(enc.buffer_sizes)  # waits for the work
        ev1.synchronize()
        wall_ms.append((time.perf_counter() - t) * 1e3)
        gpu_ms.append(cupy.cuda.get_elapsed_time(ev0, ev1))
        del enc
    raw = sum(int(c.nbytes) for c in chunks)
    # end-to-end incl. D2H of compressed bytes into one pinned buffer
    d2h_ms = None
    try:
        import cupyx

        pinned = cupyx.empty_pinned(int(raw * 1.1) + 4096 * len(chunks), dtype=np.uint8)
        STREAM.synchronize()
        t = time.perf_counter()
        enc = codec.encode(batch)
        sz = list(enc.buffer_sizes)
        if sum(sz) > pinned.nbytes:
            pinned = cupyx.empty_pinned(sum(sz), dtype=np.uint8)
        off = 0
        for i, n in enumerate(sz):
            cupy.cuda.runtime.memcpyAsync(pinned.ctypes.data + off, nv_array_ptr(enc[i]), n, 2, STREAM.ptr)
            off += n
        STREAM.synchronize()
        d2h_ms = (time.perf_counter() - t) * 1e3
        del enc
    except Exception as exc:
        record_error("throughput/d2h", exc)
    best = min(wall_ms)
    return {
        "chunks": len(chunks),
        "chunk_bytes": int(chunks[0].nbytes),
        "raw_MiB": round(raw / 2**20, 1),
        "ratio": round(raw / max(1, sum(sizes)), 3),
        "gpu_event_ms": [round(v, 2) for v in gpu_ms],
        "wall_ms": [round(v, 2) for v in wall_ms],
        "GBps_wall_best": round(raw / best / 1e6, 2),
        "GBps_event_best": round(raw / min(gpu_ms) / 1e6, 2),
        "encode_plus_d2h_ms": None if d2h_ms is None else round(d2h_ms, 2),
        "GBps_encode_plus_d2h": None if d2h_ms is None else round(raw / d2h_ms / 1e6, 2),
    }


def probe_throughput() -> None:
    tp = RESULTS["throughput"]
    total = 256 << 20
    for chunk_bytes in (1 << 20, 64 << 10):
        data, chunks = ephys_batch(total, chunk_bytes)
        for algo in ("zstd", "lz4", "gzip", "deflate"):
            if over_budget():
                log("time budget reached: skipping rest of throughput")
                return
            key = f"{algo}/{chunk_bytes >> 10}KiB"
            try:
                codec, _ = make_codec(algo, chunk_bytes)
                tp[key] = time_encode(codec, chunks)
                log("throughput", key, tp[key])
            except Exception as exc:
                tp[key] = {"error": f"{type(exc).__name__}: {exc}"}
                record_error(f"throughput/{key}", exc)
        del data, chunks
        cupy.get_default_memory_pool().free_all_blocks()


def probe_h2d() -> None:
    import cupyx

    h = RESULTS["h2d"]
    nbytes = 256 << 20
    dev = cupy.empty(nbytes, dtype=cupy.uint8)
    pinned = cupyx.empty_pinned(nbytes, dtype=np.uint8)
    pinned[:] = 1
    pageable = np.ones(nbytes, dtype=np.uint8)
    ev0, ev1 = cupy.cuda.Event(), cupy.cuda.Event()
    for label, host in (("pinned", pinned), ("pageable", pageable)):
        best = None
        for _ in range(3):
            ev0.record(STREAM)
            dev.set(host, stream=STREAM)
            ev1.record(STREAM)
            ev1.synchronize()
            ms = cupy.cuda.get_elapsed_time(ev0, ev1)
            best = ms if best is None else min(best, ms)
        h[f"{label}_H2D_GBps"] = round(nbytes / best / 1e6, 2)
    best = None
    for _ in range(3):
        ev0.record(STREAM)
        dev.get(out=pinned, stream=STREAM)
        ev1.record(STREAM)
        ev1.synchronize()
        ms = cupy.cuda.get_elapsed_time(ev0, ev1)
        best = ms if best is None else min(best, ms)
    h["pinned_D2H_GBps"] = round(nbytes / best / 1e6, 2)
    log("h2d:", h)
    del dev, pinned, pageable


def probe_cpu_ratio() -> None:
    r = RESULTS["ratio"]
    data, chunks = ephys_batch(32 << 20, 1 << 20, seed=5)
    host_chunks = [cupy.asnumpy(c) for c in chunks]
    raw = sum(c.nbytes for c in host_chunks)
    cpu_codecs = {
        "cpu_zstd_level0(default)": Zstd(level=0),
        "cpu_zstd_level1": Zstd(level=1),
        "cpu_zstd_level3": Zstd(level=3),
        "cpu_gzip_level1": GZip(level=1),
        "cpu_gzip_level5": GZip(level=5),
        "cpu_lz4_default": LZ4(),
    }
    for name, codec in cpu_codecs.items():
        try:
            t = time.perf_counter()
            comp = sum(len(codec.encode(c)) for c in host_chunks)
            dt = time.perf_counter() - t
            r[name] = {"ratio": round(raw / comp, 3), "MBps_1thread": round(raw / dt / 1e6, 1)}
        except Exception as exc:
            record_error(f"ratio/{name}", exc)
    for algo in ("zstd", "gzip", "lz4"):
        try:
            codec, _ = make_codec(algo, 1 << 20)
            _, sizes = encode_batch(codec, chunks)
            r[f"gpu_{algo}"] = {"ratio": round(raw / sum(sizes), 3)}
        except Exception as exc:
            record_error(f"ratio/gpu_{algo}", exc)
    log("ratio:", r)


def probe_kvikio() -> None:
    k = RESULTS["kvikio"]
    try:
        import kvikio
    except Exception as exc:
        k["import"] = f"{type(exc).__name__}: {exc}"
        return
    k["version"] = getattr(kvikio, "__version__", None)
    try:
        import tempfile

        nbytes = 256 << 20
        dev = cupy.arange(nbytes // 4, dtype=cupy.int32).view(cupy.uint8)
        with tempfile.TemporaryDirectory(dir="/tmp") as d:
            p = os.path.join(d, "a.bin")
            t = time.perf_counter()
            with kvikio.CuFile(p, "w") as f:
                f.write(dev)
            k["cufile_write_GBps"] = round(nbytes / (time.perf_counter() - t) / 1e9, 2)
            p2 = os.path.join(d, "b.bin")
            t = time.perf_counter()
            host = cupy.asnumpy(dev)
            with open(p2, "wb") as f:
                f.write(host)
            k["d2h_plus_write_GBps"] = round(nbytes / (time.perf_counter() - t) / 1e9, 2)
        try:
            k["compat_mode"] = str(kvikio.defaults.compat_mode())
        except Exception:
            pass
    except Exception as exc:
        k["error"] = f"{type(exc).__name__}: {exc}"
    log("kvikio:", k)


# ----------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------
def summary() -> int:
    print("\n" + "=" * 88)
    env = RESULTS["env"]
    print(
        f"device: {env.get('device_name')}  cupy {env.get('cupy')}  nvcomp {env.get('nvcomp')} "
        f"(cuda {env.get('nvcomp_cuda')})  numcodecs {env.get('numcodecs')}  zarr {env.get('zarr')}"
    )
    print("codec kwargs that worked:")
    for algo, desc in RESULTS["names"].items():
        print(f"  {algo:<16} {desc}")
    print("\nCPU-readability (nvCOMP RAW -> stock numcodecs decode, bit-exact):")
    print(f"  {'algo':<6} {'dtype':<8} {'size':<10} {'ok':<5} {'ratio':>7} {'rand':>7}  extra")
    n_bad = 0
    for row in RESULTS["conformance"]:
        extra = {k: row[k] for k in ("frames", "fcs", "checksum_flag", "members", "error") if k in row}
        n_bad += 0 if row.get("ok") else 1
        print(
            f"  {row['algo']:<6} {row['dtype']:<8} {row['size']:<10} {str(row.get('ok')):<5} "
            f"{row.get('ratio_walk', ''):>7} {row.get('ratio_random', ''):>7}  {extra}"
        )
    print("\nframes / chunking:")
    for k, v in RESULTS["frames"].items():
        print(f"  {k}: {v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != 'codec_kwargs'}}")
    print("\ngzip:", json.dumps(RESULTS["gzip"], default=str)[:1500])
    print("deflate:", RESULTS["deflate"])
    print("\nthroughput (encode only, int16 ephys-like):")
    for k, v in RESULTS["throughput"].items():
        if "error" in v:
            print(f"  {k:<16} ERROR {v['error']}")
        else:
            print(
                f"  {k:<16} {v['raw_MiB']:>6} MiB  ratio {v['ratio']:>6}  wall {v['GBps_wall_best']:>7} GB/s  "
                f"event {v['GBps_event_best']:>7} GB/s  +D2H {v['GBps_encode_plus_d2h']} GB/s"
            )
    print("\ncopies:", RESULTS["h2d"])
    print("ratios (32 MiB int16 ephys-like, 1 MiB chunks):")
    for k, v in RESULTS["ratio"].items():
        print(f"  {k:<26} {v}")
    print("kvikio:", RESULTS["kvikio"])
    print(f"\nerrors: {len(RESULTS['errors'])}; conformance failures: {n_bad}; elapsed {time.perf_counter() - T0:.1f}s")
    for e in RESULTS["errors"][:20]:
        print(f"  - {e['where']}: {e['error']}")
    print("=" * 88)
    RESULTS["summary"] = {
        "errors": len(RESULTS["errors"]),
        "conformance_failures": n_bad,
        "elapsed_s": round(time.perf_counter() - T0, 1),
    }
    return 0 if n_bad == 0 and RESULTS["conformance"] else 1


def main() -> int:
    global STREAM
    probe_env()
    try:
        cupy.cuda.Device(0).use()
        STREAM = cupy.cuda.Stream(non_blocking=True)
    except Exception as exc:
        record_error("stream", exc)
        print("probe_nvcomp: no usable CUDA device:", exc, file=sys.stderr)
        write_json()
        return 5
    steps = [
        ("api_surface", probe_api_surface),
        ("basic_single", probe_basic_single),
        ("conformance", probe_conformance),
        ("frames", probe_frames_and_chunking),
        ("misaligned", probe_misaligned),
        ("gzip_details", probe_gzip_details),
        ("h2d", probe_h2d),
        ("throughput", probe_throughput),
        ("cpu_ratio", probe_cpu_ratio),
        ("kvikio", probe_kvikio),
    ]
    for name, fn in steps:
        if over_budget() and name not in ("h2d",):
            log(f"time budget reached: skipping {name}")
            continue
        log(f"--- {name}")
        try:
            fn()
        except Exception as exc:
            record_error(name, exc)
        write_json()
    rc = summary()
    write_json()
    return rc


if __name__ == "__main__":
    sys.exit(main())
