"""The data path of a write, one module per step, in the order data flows:

plan (:mod:`.preflight`, :mod:`.plan`, :mod:`.pipeline`'s ``validate``) → read
(:mod:`.source`, :mod:`.dispatch` for random-access tiles, :mod:`.feed` and :mod:`.assemble`
for sequential buffers) → encode (:mod:`.target`, with :mod:`..cpu` or :mod:`..gpu`) → store
(:mod:`.sink`) → finalize (:mod:`.pipeline`'s ``finish``: growth, :mod:`.report`).

:mod:`.queue` is where hdmf-zarr hands datasets in; :mod:`.budget` bounds the bytes in flight
throughout, :mod:`.progress` counts them. A dataset travels as a :class:`.dataset.DatasetWrite`:
its :class:`.source.DatasetSource` and its :class:`.target.DatasetTarget`.
"""
