"""Low-bit weights: int4 group quantization, its kernels, AWQ checkpoints and the ``quantize`` command."""
