"""Compile-free drop-ins for the dense-CRF tools of weakly supervised segmentation code.

- :func:`bilateral_filter`: the permutohedral bilateral filter of the SWIG/C++ ``bilateralfilter``
  extension, torch in and out (CPU or CUDA). :func:`bilateralfilter_batch` / :func:`bilateralfilter`
  keep the extension's own in-place numpy calls.
- :class:`DenseEnergyLoss`: the dense energy loss module of RRM / rloss and its copies (ToCo, SeCo,
  AFA), same constructor, same ``forward`` arguments, same value and gradient; without ``seg_label``
  it is rloss's ``DenseCRFLoss``.
- :func:`dense_crf`: pydensecrf's fully connected CRF for batches, on the torch lattice (CPU or GPU)
  or through pydensecrf's worker pool.

The public API is ``__all__``, versioned with the package (``rrm.__version__``; changes in
docs/ops.md, "Changelog"). ``pip install rrm`` (no extras) brings torch and numpy only, which is all
this package imports; ``dense_crf(backend="pydensecrf")`` needs pydensecrf (the ``pipeline`` extra).
"""

from rrm.ops.crf import dense_crf
from rrm.ops.energy import DenseEnergyLoss
from rrm.ops.filter import bilateral_filter, bilateralfilter, bilateralfilter_batch

__all__ = ["DenseEnergyLoss", "bilateral_filter", "bilateralfilter", "bilateralfilter_batch", "dense_crf"]
