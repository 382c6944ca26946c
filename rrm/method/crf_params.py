"""The dense CRF's settings, shared by the pydensecrf CRF (rrm.method.crf) and the torch one
(rrm.method.crf_torch); rrm.settings re-exports it with the other params.yaml sections. This module imports
the standard library only, so rrm.ops (the light install: torch + numpy, no yaml) reads it too."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CRFParams:
    """Mean-field iterations and kernel settings (RRM uses AffinityNet's for eq. 5: params.yaml mining.crf)."""

    iterations: int
    gauss_sxy: float
    gauss_compat: float
    bi_sxy: float
    bi_srgb: float
    bi_compat: float

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError(f"CRFParams.iterations must be a non-negative int, got {self.iterations!r}")
        for name in ("gauss_sxy", "bi_sxy", "bi_srgb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CRFParams.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("gauss_compat", "bi_compat"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"CRFParams.{name} must be >= 0, got {getattr(self, name)!r}")
