"""Low-rank compression: SVD truncation of linear layers, compressed checkpoints, the ``compress`` command."""
