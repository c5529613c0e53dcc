"""Message specs as data, one module per dialect."""
