"""CRFParams, for rrm.ops (defined in rrm.settings with the other params.yaml sections)."""

from rrm.settings import CRFParams

__all__ = ["CRFParams"]
