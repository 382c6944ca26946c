"""Permutohedral-lattice Gaussian filtering (Adams, Baek, Davis 2010) in vectorised torch.

Computes ``out_i ~= sum_j exp(-|f_i - f_j|^2 / 2) v_j`` for P points with d-dimensional features
in O(P d^2 + M d K) instead of O(P^2 K): points are splatted onto the vertices of the enclosing
simplex of the permutohedral lattice, the lattice is blurred with a [1, 2, 1]/2 kernel along each
of its d + 1 directions, and the result is sliced back with the same barycentric weights. The
constants (feature scale sqrt(2/3) (d + 1), unnormalised blur, slice factor 1 / (1 + 2^-d)) follow
the lattice that the authors' energy loss and pydensecrf use, so the approximation error against
the exact Gaussian sum is the same as theirs (about 0.57x the exact sum on photos, see tests).

The lattice hash is a stable sort of the vertex keys packed into one integer; blur neighbours are
found with ``searchsorted`` (numpy's on CPU: it starts each search from the previous hit, and the
queries come sorted). Everything else is torch tensor code (no Python loop over points), so it runs
on CPU and CUDA. All index work is done once in ``PermutohedralLattice.__init__`` (point-major, so
nothing is transposed; small ops on one thread, see ``_num_threads``) and reused by every ``filter``
call (e.g. across mean-field iterations). On CPU the filter is three CSR sparse-dense products
(splat, d + 1 blurs, slice) into preallocated outputs; elsewhere it is index_add and gathers.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

_MAX_KEY_BITS = 52  # keys are computed as float64 integers, exact below 2^53


@contextmanager
def _num_threads(count: int, *, unless: bool = False) -> Iterator[None]:
    """Run the block with ``count`` torch threads (restored after), or unchanged if ``unless``.

    The lattice is built from ~80 elementwise and index ops on 0.1-2 MB tensors, each tens of
    microseconds on one core. With OMP_WAIT_POLICY=PASSIVE a second OpenMP thread sleeps between
    ops and must be woken for each, which costs more than it saves, and far more when the other
    core is busy (training runs next to the CRF workers). Measured on the 2-core benchmark machine:
    a 100k-element add 0.03 ms on one thread, 0.19 ms on two. Only the sort, the search and the
    sparse products gain from threads, so the build runs on one and lends them the sort.
    """
    if unless or torch.get_num_threads() == count:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def _elevation(d: int, device: torch.device) -> Tensor:
    """(d + 1, d) matrix that elevates features onto the hyperplane sum(x) = 0 of R^{d+1} (the E matrix
    of the paper, scaled so that the [1, 2, 1] blur matches the unit Gaussian) and divides by d + 1:
    y[j] = (sum_{k >= j} s_k f_k - j s_{j-1} f_{j-1}) / (d + 1). Cached: ~17 small ops per lattice."""
    d1 = d + 1
    i = torch.arange(d, dtype=torch.float64)
    s = math.sqrt(2.0 / 3.0) * d1 / torch.sqrt((i + 1) * (i + 2))
    elevate = torch.triu(s.expand(d1, d), diagonal=0).clone()
    elevate[torch.arange(1, d1), torch.arange(d)] = -torch.arange(1, d1) * s
    return (elevate / d1).to(device=device, dtype=torch.float32)


def _descending_rank(residual: Tensor, dtype: torch.dtype) -> Tensor:
    """(d + 1, P) -> rank[i] = position of coordinate i in the descending order of its column, ties to
    the lower index first: the number of j > i with r_j > r_i plus the number of j < i with r_j >= r_i.

    Two equal computations: on the CPU pairwise comparisons of int8 rows are the fastest (4-10x the
    other), on CUDA one broadcast comparison runs 7 kernels instead of 6 per pair (90 at d = 5), as the
    GPU build is launch-bound.
    """
    return (_rank_pairwise if residual.device.type == "cpu" else _rank_broadcast)(residual, dtype)


def _rank_pairwise(residual: Tensor, dtype: torch.dtype) -> Tensor:
    d1, num_points = residual.shape
    rank = torch.zeros(d1, num_points, dtype=dtype, device=residual.device)
    for a in range(d1):
        for b in range(a + 1, d1):
            a_below = residual[a] < residual[b]
            rank[a] += a_below
            rank[b] += ~a_below
    return rank


def _rank_broadcast(residual: Tensor, dtype: torch.dtype) -> Tensor:
    # before[i, j] (j > i): r_i < r_j. Of the i coordinates j < i, those with r_j >= r_i are the ones
    # not "before" it: i - sum_j before[j, i].
    d1 = residual.shape[0]
    upper = torch.ones(d1, d1, dtype=torch.bool, device=residual.device).triu_(1)[:, :, None]
    before = (residual[:, None] < residual[None, :]).logical_and_(upper)
    position = torch.arange(d1, dtype=dtype, device=residual.device)[:, None]
    return before.sum(1, dtype=dtype).sub_(before.sum(0, dtype=dtype)).add_(position)


class PermutohedralLattice:
    """A lattice built for fixed features; ``filter`` applies the Gaussian to any (P, K) values.

    Args:
        features: (P, d) positions already divided by the per-dimension sigmas.
        groups: optional (P,) integer group id per point (e.g. the image index of a batch); points
            of different groups never interact, so one lattice filters a whole batch at once.
        sparse: filter with CSR sparse matmuls (fastest on CPU; CPU only, as the slice and blur
            matrices have unsorted and repeated column indices, which cuSPARSE does not promise
            to accept) or with index_add and gathers (any device). None: sparse on CPU.
    """

    def __init__(self, features: Tensor, groups: Tensor | None = None, *, sparse: bool | None = None) -> None:
        if features.dim() != 2 or features.shape[0] == 0 or features.shape[1] == 0:
            raise ValueError(
                f"features: expected a non-empty (P, d) tensor, got shape {tuple(features.shape)}"
            )
        # One reduction catches NaN and inf; the elementwise test only runs if the sum overflowed.
        if not math.isfinite(features.sum()) and not torch.isfinite(features).all():
            raise ValueError("features: contains NaN or inf")
        num_points, d = features.shape
        device = features.device
        self.num_points, self.dim = num_points, d
        self.device = device
        self.dtype = features.dtype if features.is_floating_point() else torch.float32
        # Small CPU ops run on one thread (see _num_threads); the sort uses them all.
        threads = torch.get_num_threads() if device.type == "cpu" else 1
        with _num_threads(1, unless=threads == 1):
            self._build(features, groups, sparse, threads)

    def _build(self, features: Tensor, groups: Tensor | None, sparse: bool | None, threads: int) -> None:
        """The lattice's index work (see __init__); ``threads`` CPU threads are lent to the sort."""
        num_points, d, device = self.num_points, self.dim, self.device
        d1 = d + 1

        y = _elevation(d, device) @ features.to(torch.float32).t()  # (d + 1, P)

        # Nearest remainder-0 lattice point (rem0 = (d + 1) * rounded), then rank[i] = position of
        # coordinate i in the descending order of the residual, ties to the lower index first.
        rounded = torch.round(y)
        residual = y - rounded
        small_int = torch.int8 if d1 < 64 else torch.int32  # ranks and wraps: |value| < 2 (d + 1)
        rank = _descending_rank(residual, small_int)
        # Points whose rounding left the plane sum = 0 are brought back: the rank wraps around
        # and the wrapped coordinates move by one lattice step (floor(rank / (d + 1)) = -1, 0, 1;
        # |sum of the rounded coordinates| <= (d + 1) / 2 as each moved by at most 1/2).
        rank += rounded.sum(0).to(small_int)
        wrap = (rank >= d1).to(small_int).sub_((rank < 0).to(small_int))
        rank -= wrap * d1
        rounded -= wrap
        residual += wrap

        # Per point, a row of d + 2 slots (point-major, so that nothing is transposed later); slot[i]
        # is the flat position of coordinate i's reverse rank d - rank[i] in it.
        row_start = torch.arange(0, num_points * (d1 + 1), d1 + 1, device=device)
        slot = (d - rank).to(torch.int64).add_(row_start)

        # Barycentric weights (p. 10 of the paper): with r[k] the residual of the coordinate of
        # rank d - k, vertex k gets r[k] - r[k - 1] and vertex 0 gets 1 + r[0] - r[d].
        by_rank = torch.empty(num_points, d1 + 1, dtype=residual.dtype, device=device)
        by_rank.view(-1).scatter_(0, slot.view(-1), residual.view(-1))
        weights = torch.empty(num_points, d1, dtype=self.dtype, device=device)  # point-major
        torch.sub(by_rank[:, 1:d1], by_rank[:, : d1 - 1], out=weights[:, 1:])
        torch.sub(by_rank[:, 0], by_rank[:, d], out=weights[:, 0]).add_(1.0)
        weights = weights.view(-1)

        # Integer keys of the simplex vertices (first d coordinates; the last is implied by sum = 0).
        # Vertex r adds r - (d + 1) [rank_i > d - r] to coordinate i, so all coordinates of a
        # lattice point are congruent mod d + 1: the key packs x_0 and the exact quotients
        # (x_i - x_0) / (d + 1), which makes the key space (d + 1)^(d-1) times smaller than packing
        # the x_i themselves. Margins (2d on x_0, 2 on the quotients) keep every vertex and its blur
        # neighbours inside the packing, so a neighbour is always key + a constant.
        quotients = rounded[1:d] - rounded[0]
        low = torch.cat([rounded[:1].amin(1) * d1 - 2 * d, quotients.amin(1) - 2]).to(torch.float64)
        high = torch.cat([rounded[:1].amax(1) * d1 + 2 * d, quotients.amax(1) + 2]).to(torch.float64)
        span = (high - low + 1).cpu()
        low = low.cpu()
        strides = torch.cat([span.new_ones(1), torch.cumprod(span[:-1], 0)])
        total = float(strides[-1] * span[-1])
        num_groups = 1
        if groups is not None:
            if groups.shape != (num_points,):
                raise ValueError(f"groups: expected shape ({num_points},), got {tuple(groups.shape)}")
            groups = groups.to(device=device, dtype=torch.int64)
            if int(groups.min()) < 0:
                raise ValueError("groups: ids must be non-negative")
            num_groups = int(groups.max()) + 1
        if math.log2(total) + math.log2(num_groups) > _MAX_KEY_BITS:
            raise ValueError(
                f"features: lattice key space too large ({total:.3g} keys x {num_groups} groups);"
                " are the features divided by their sigmas?"
            )
        key_dtype = torch.int32 if total * num_groups < 2**31 else torch.int64
        # Vertex 0: base = x_0 + sum_i stride_i (x_i - x_0) / (d + 1) (minus the offsets), exact in
        # float64. Vertex r: key_r = base + r + sum_i w_i [rank_i > d - r] with
        # w_0 = sum_{i>0} stride_i - (d+1), w_i = -stride_i, w_d = 0: the weights plus one (the + r)
        # are scattered to slots 1.. d + 1 by reverse rank (slot 0 holds base) and summed along the row.
        others = float(strides[1:].sum())
        coef = strides.clone()
        coef[0] = d1 - others
        base = coef.to(device) @ rounded[:d].to(torch.float64) - float((strides * low).sum())
        if groups is not None:
            base += groups.to(torch.float64) * total
        weight = torch.cat([coef.new_tensor([others - d1]), -strides[1:], coef.new_zeros(1)]) + 1
        weight = weight.to(device=device, dtype=key_dtype)[:, None].expand(d1, num_points)
        moved = torch.empty(num_points, d1 + 1, dtype=key_dtype, device=device)
        moved[:, 0] = base
        # Slot s of the shifted view is slot s + 1 of the row.
        moved.view(-1)[1:].scatter_(0, slot.view(-1), weight.reshape(-1))
        if device.type == "cuda":  # CUDA's scan along rows of 3-6 entries took 2.4 ms at 4 x 321^2; the
            # column-wise scan of the transposed copy takes microseconds
            keys = torch.cumsum(moved[:, :d1].t().contiguous(), 0, dtype=key_dtype).t().reshape(-1)
        else:
            keys = torch.cumsum(moved[:, :d1], 1, dtype=key_dtype).view(-1)

        # Hash = stable sort: equal keys are one lattice point, listed in point order. Lattice rows
        # are 1-based; row 0 stays zero and stands for every missing neighbour.
        with _num_threads(threads, unless=threads == 1):
            sorted_keys, perm = torch.sort(keys, stable=True)
        num_pairs = keys.numel()
        first = torch.empty(num_pairs, dtype=torch.bool, device=device)  # first entry of a vertex
        first[:1] = True
        torch.ne(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
        starts = first.nonzero().squeeze(1)
        unique_keys = sorted_keys.index_select(0, starts)
        num_vertices = unique_keys.numel()
        self.num_vertices = num_vertices
        # Lattice row of each (point, vertex) pair; int32 indices halve the memory traffic.
        index_dtype = torch.int32 if num_pairs < 2**31 else torch.int64
        vertex = torch.empty(num_pairs, dtype=index_dtype, device=device)
        vertex.scatter_(0, perm, torch.cumsum(first, 0, dtype=index_dtype))

        # Blur neighbours along direction j: x - 1 everywhere, + d on coordinate j (j = d moves only
        # the implied coordinate). n2 is the inverse of n1, so only n1 is searched.
        # In packed digits: x_0 moves by d (j = 0) or -1; quotient i by -1 (j = 0), +1 (j = i), else 0.
        deltas = torch.zeros(d1, d, dtype=torch.float64)
        deltas[:, 0] = -1.0
        deltas[0, 0] = d
        deltas[0, 1:] = -1.0
        deltas[torch.arange(1, d), torch.arange(1, d)] = 1.0
        offsets = (deltas @ strides).to(device=device, dtype=key_dtype)
        wanted = unique_keys + offsets[:, None]
        if device.type == "cpu":  # numpy starts each search from the previous hit: the rows are sorted
            pos = torch.from_numpy(np.searchsorted(unique_keys.numpy(), wanted.numpy()))
        else:
            pos = torch.searchsorted(unique_keys, wanted)
        pos.clamp_(max=num_vertices - 1)
        found = unique_keys.index_select(0, pos.view(-1)).view_as(pos) == wanted
        rows = torch.arange(num_vertices + 1, device=device)
        n1 = torch.zeros(d1, num_vertices + 1, dtype=torch.int64, device=device)  # (d+1, M+1)
        n1[:, 1:] = pos.add_(1).mul_(found)
        n2 = torch.zeros_like(n1).scatter_(1, n1, rows * (n1 > 0))

        alpha = 1.0 / (1.0 + 2.0 ** (-d))  # the slice factor, folded into the filter's weights
        self.sparse = device.type == "cpu" if sparse is None else sparse
        if self.sparse and device.type != "cpu":
            raise ValueError(f"sparse=True: the CSR filter is for CPU tensors, features are on {device}")
        if not self.sparse:
            # Each blur step is side * (2 self + n1 + n2) (centre = 2 side in every direction): one gather
            # of the rows [self, self, n1, n2] and one sum, 2 kernels (the GPU filter is launch-bound),
            # with the sides' product and alpha folded into the slice weights.
            self.vertex, self.splat_weights = vertex, weights
            self.slice_weights = weights * (alpha * 0.5**d1)
            self.blur_rows = torch.stack([rows.expand(d1, -1), rows.expand(d1, -1), n1, n2], 1).view(d1, -1)
            return
        # Splat ((M+1) x P, row 0 empty), blur ((M+1) x (M+1), three entries per row, missing
        # neighbours hit the zero row) and slice (P x (M+1)) as CSR matrices.
        with warnings.catch_warnings():  # torch flags sparse CSR as beta on its first use
            warnings.simplefilter("ignore", UserWarning)
            crow = torch.empty(num_vertices + 2, dtype=index_dtype, device=device)
            crow[:1] = 0
            crow[1:-1] = starts
            crow[-1:] = num_pairs
            # Point of each sorted (point, vertex) pair: perm // (d + 1), as a gather.
            point = torch.arange(num_points, device=device, dtype=index_dtype)[:, None].expand(-1, d1)
            point = point.reshape(-1).index_select(0, perm)
            self.splat_matrix = torch.sparse_csr_tensor(
                crow, point, weights.index_select(0, perm), size=(num_vertices + 1, num_points)
            )
            blur_crow = torch.arange(0, 3 * (num_vertices + 1) + 1, 3, device=device, dtype=index_dtype)
            blur_cols = torch.empty(d1, num_vertices + 1, 3, device=device, dtype=index_dtype)
            blur_cols[:, :, 0] = rows
            blur_cols[:, :, 1] = n1
            blur_cols[:, :, 2] = n2
            # [centre, side, side] = [1, 1/2, 1/2]; the first direction also carries alpha.
            blur_weights = torch.tensor([[alpha, alpha / 2, alpha / 2], [1.0, 0.5, 0.5]], dtype=self.dtype,
                                        device=device)
            blur_values = [blur_weights[j].repeat(num_vertices + 1) for j in range(2)]
            self.blur_matrices = [
                torch.sparse_csr_tensor(
                    blur_crow,
                    blur_cols[j].view(-1),
                    blur_values[min(j, 1)],  # only the first direction carries alpha
                    size=(num_vertices + 1, num_vertices + 1),
                )
                for j in range(d1)
            ]
            slice_crow = torch.arange(0, num_pairs + 1, d1, device=device, dtype=index_dtype)
            self.slice_matrix = torch.sparse_csr_tensor(
                slice_crow, vertex, weights, size=(num_points, num_vertices + 1)
            )


    def rescale_(self, before: Tensor | None = None, after: Tensor | None = None) -> PermutohedralLattice:
        """Fold per-point factors into the lattice: ``filter(v)`` becomes ``after * K (before * v)``.

        before, after: (P,) tensors. Saves two passes over (P, K) values per filter call, e.g. for
        the CRF's symmetric normalisation or the energy loss's soft filter S.
        """
        d1 = self.dim + 1
        for name, factor in (("before", before), ("after", after)):
            if factor is not None and factor.shape != (self.num_points,):
                raise ValueError(f"{name}: expected shape ({self.num_points},), got {tuple(factor.shape)}")
        if self.sparse:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                if before is not None:
                    m = self.splat_matrix
                    factor = before.to(self.dtype).index_select(0, m.col_indices())
                    self.splat_matrix = torch.sparse_csr_tensor(
                        m.crow_indices(), m.col_indices(), m.values() * factor, size=m.shape
                    )
                if after is not None:
                    m = self.slice_matrix
                    values = (m.values().view(-1, d1) * after.to(self.dtype)[:, None]).reshape(-1)
                    self.slice_matrix = torch.sparse_csr_tensor(
                        m.crow_indices(), m.col_indices(), values, size=m.shape
                    )
        else:
            if before is not None:
                factor = before.to(self.dtype)[:, None]
                self.splat_weights = (self.splat_weights.view(-1, d1) * factor).reshape(-1)
            if after is not None:
                factor = after.to(self.dtype)[:, None]
                self.slice_weights = (self.slice_weights.view(-1, d1) * factor).reshape(-1)
        return self

    def filter(self, values: Tensor, *, add_to: Tensor | None = None) -> Tensor:
        """Gaussian-filter (P, K) values: ``out_i ~= sum_j exp(-|f_i - f_j|^2 / 2) v_j``.

        The self-term (j = i) is included and the result is not normalised. ``add_to`` (P, K), if
        given, is added to the result in the same pass. Linear in ``values``; not differentiable
        through autograd (callers such as the energy loss supply gradients).
        """
        if values.dim() != 2 or values.shape[0] != self.num_points:
            raise ValueError(f"values: expected shape ({self.num_points}, K), got {tuple(values.shape)}")
        with torch.no_grad():
            vals = values.to(device=self.device, dtype=self.dtype)
            if self.sparse:
                # addmm with beta = 0 into fresh buffers: sparse.mm would zero-fill and copy each output.
                lattice, spare = vals.new_empty(2, self.num_vertices + 1, vals.shape[1]).unbind()
                torch.addmm(lattice, self.splat_matrix, vals, beta=0, out=lattice)
                for blur in self.blur_matrices:  # [1, 2, 1] / 2 along each lattice direction
                    torch.addmm(spare, blur, lattice, beta=0, out=spare)
                    lattice, spare = spare, lattice
                if add_to is None:
                    out = vals.new_empty(vals.shape)
                    return torch.addmm(out, self.slice_matrix, lattice, beta=0, out=out).to(values.dtype)
                return torch.addmm(add_to, self.slice_matrix, lattice)
            d1, k = self.dim + 1, vals.shape[1]
            spread = (vals.unsqueeze(1) * self.splat_weights.view(-1, d1, 1)).reshape(-1, k)
            lattice = vals.new_zeros(self.num_vertices + 1, k).index_add_(0, self.vertex, spread)
            for rows in self.blur_rows:  # (2 self + n1 + n2) along each lattice direction
                lattice = lattice.index_select(0, rows).view(4, -1, k).sum(0)
            gathered = lattice.index_select(0, self.vertex).view(-1, d1, k)
            out = (gathered * self.slice_weights.view(-1, d1, 1)).sum(1)
            return out.to(values.dtype) if add_to is None else out.add_(add_to)


def bilateral_features(image: Tensor, *, sigma_xy: float, sigma_rgb: float) -> Tensor:
    """(3, H, W) image in 0..255 -> (H*W, 5) features (x/sxy, y/sxy, r/srgb, g/srgb, b/srgb).

    x is the column and y the row index; pixels are in row-major order (``image.flatten(1)``). A
    batch (N, 3, H, W) gives the images' features one after another, (N*H*W, 5). The result is the
    transpose of a contiguous (5, N*H*W) tensor: feature planes are filled without strided writes
    and the lattice, which works on planes, reads them without a copy.
    """
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"image: expected (3, H, W) or (N, 3, H, W), got shape {tuple(image.shape)}")
    if sigma_xy <= 0 or sigma_rgb <= 0:
        raise ValueError(f"sigma_xy and sigma_rgb must be positive, got {sigma_xy}, {sigma_rgb}")
    height, width = image.shape[-2:]
    batch = image.reshape(-1, 3, height, width)
    n = batch.shape[0]
    out = torch.empty(5, n, height, width, device=image.device, dtype=torch.float32)
    out[0] = torch.arange(width, device=image.device, dtype=torch.float32).div_(sigma_xy)
    out[1] = torch.arange(height, device=image.device, dtype=torch.float32).div_(sigma_xy)[:, None]
    torch.div(batch.transpose(0, 1), sigma_rgb, out=out[2:])
    return out.view(5, -1).t()


def exact_gaussian_filter(features: Tensor, values: Tensor, *, chunk: int = 2048) -> Tensor:
    """Dense O(P^2) float64 reference of ``PermutohedralLattice.filter`` (same semantics).

    features (P, d), values (P, K) -> (P, K) float64: sum_j exp(-|f_i - f_j|^2 / 2) v_j, self-term
    included.
    """
    if features.dim() != 2 or values.dim() != 2 or features.shape[0] != values.shape[0]:
        raise ValueError(
            "features (P, d) and values (P, K) must agree, got "
            f"{tuple(features.shape)} and {tuple(values.shape)}"
        )
    f = features.to(torch.float64)
    v = values.to(torch.float64)
    out = torch.empty_like(v)
    for start in range(0, f.shape[0], chunk):
        block = torch.cdist(f[start : start + chunk], f).square_().mul_(-0.5).exp_()
        out[start : start + chunk] = block @ v
    return out
