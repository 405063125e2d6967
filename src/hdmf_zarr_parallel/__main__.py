"""``python -m hdmf_zarr_parallel``: the ``hdmf-zarr-parallel`` command."""

import sys

from .cli import main

sys.exit(main())
