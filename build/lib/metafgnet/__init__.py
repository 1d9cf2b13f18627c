"""metafgnet: a reproducibility package for MetaFGNet (Zhang, Tang, Jia, ECCV 2018)."""

__version__ = "0.1.0"
