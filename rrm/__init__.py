"""RRM: Reliable Region Mining for weakly supervised semantic segmentation (AAAI 2020)."""

__version__ = "0.2.0"
