"""The applications built on the library: the ``hdmf-zarr-parallel`` command and what it runs.

``cli`` (the command), ``convert`` (NWB HDF5 or Zarr v2 -> NWB Zarr v3) with ``convert_plan``,
``convert_io``, ``convert_report``, ``destination``, ``renames``, ``h5direct`` and ``zarr_v2``;
``verify`` (comparing two files); ``demo``; ``bench`` with ``bench_data`` and ``bench_chart``;
``examples`` (example NWB files and iterators, for the demo, the benchmarks, the tests and the
notebooks); ``reopening`` (iterators that pickle by path).

Nothing here is imported by the library itself (``hdmf_zarr_parallel``, its IO classes, the
write path), and importing this package imports none of its modules. Optional dependencies are
imported only where used: matplotlib by ``bench_chart`` (the ``[bench]`` extra), distributed by
``convert --engine dask`` (the ``[dask]`` extra).
"""
