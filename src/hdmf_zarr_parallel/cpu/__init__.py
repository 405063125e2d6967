"""CPU encoding of write units (chunks, or whole shards) with the array's own numcodecs objects."""
