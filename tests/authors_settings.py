"""The authors' mining settings, written out once for the tests (the method dataclasses have no defaults:
the pipeline's values live in params.yaml)."""

from rrm.settings import CRFParams, MiningParams

CRF = CRFParams(iterations=10, gauss_sxy=3.0, gauss_compat=3.0, bi_sxy=80.0, bi_srgb=13.0,
                bi_compat=10.0)  # AffinityNet's CRF, which RRM uses for eq. 5
MINING = MiningParams(rule="code", alpha_ratio=0.4, gamma=4.0, gamma_low=4.0, gamma_high=32.0, cam_min=0.1,
                      bg_confident=0.8, crf_confident=0.8, crf=CRF, crf_backend="pydensecrf")  # the authors' code
