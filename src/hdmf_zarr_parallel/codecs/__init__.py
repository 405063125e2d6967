"""Chunk encoders: zarr's own CPU codecs and the nvCOMP GPU codecs."""
