"""The GPU path: nvCOMP encodes batches of chunks on CUDA streams, host threads store them.

Importing this package, or :mod:`.status`, imports neither cupy nor nvCOMP. The modules,
in the order data flows through them:

* :mod:`.status`: is the GPU path usable here, and why not (one cached probe);
* :mod:`.plan`: can an array's codec chain be written on the GPU (a :class:`~.plan.GpuCodecPlan`
  or an :class:`~.plan.Unsupported` with the reason);
* :mod:`.algorithms`: one object per output algorithm (zstd, gzip, lz4, zlib, and Blosc with zstd
  or LZ4 blocks): its nvCOMP name, size cap, framing and CPU reference codec; :mod:`.framing` holds
  the byte helpers they use, :mod:`.blosc_frame` Blosc's block layout, per-block shuffles and
  framing, :mod:`.inputs` what framing may read back of a batch's uncompressed bytes;
* :mod:`..rows` (shared with the CPU path): the array operations on chunk rows (carving, fill
  check, byte shuffle), numpy or cupy;
* :mod:`.encoder`: :class:`~.encoder.NvcompBatchEncoder`, one batched nvCOMP call per batch;
* :mod:`.lanes`: one CUDA stream's worth of work (``NvcompLane``), or the same steps on the
  host (``HostLane``, for machines without a GPU);
* :mod:`.datapath`: read, encode on a lane, assemble shards, store: plain functions;
* :mod:`.engine`, :mod:`.shared_tasks`, :mod:`.routing`: the GPU engine's scheduling, the one
  queue its lanes share with CPU worker threads, and which datasets go to which;
* :mod:`.worker_lanes`: the lanes of Dask workers (one per worker thread, closed at the end of a write).
"""
