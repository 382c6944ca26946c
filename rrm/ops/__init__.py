"""Compile-free drop-ins for the dense-CRF tools of weakly supervised segmentation code.

- :func:`bilateral_filter` / :func:`bilateralfilter_batch`: the permutohedral bilateral filter of the
  SWIG/C++ ``bilateralfilter`` extension (torch on CPU or CUDA; the second keeps the extension's
  in-place numpy call).
- :class:`DenseEnergyLoss`: the dense energy loss module of RRM / rloss and its copies (ToCo, SeCo),
  same constructor, same ``forward`` arguments, same value and gradient.
- :func:`dense_crf`: pydensecrf's fully connected CRF for batches, on the torch lattice (CPU or GPU)
  or through pydensecrf's worker pool.

Importing this package needs torch and numpy only; pydensecrf is imported when its backend is used.
"""

from rrm.ops.crf import dense_crf
from rrm.ops.energy import DenseEnergyLoss
from rrm.ops.filter import bilateral_filter, bilateralfilter_batch

__all__ = ["DenseEnergyLoss", "bilateral_filter", "bilateralfilter_batch", "dense_crf"]
