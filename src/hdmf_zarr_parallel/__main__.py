"""``python -m hdmf_zarr_parallel``: the ``hdmf-zarr-parallel`` command (:mod:`.tools.cli`)."""

import sys

from .tools.cli import main

sys.exit(main())
