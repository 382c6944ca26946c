"""Eager ops (kernel launches) and host syncs of the GPU path's mining + energy loss, counted on any machine.

    python benchmarks/kernel_count.py                   # 4 real VOC crops at 321, params.yaml's settings

On a GPU, mining + energy loss for a batch (gpu_step.py part a) is launch-bound: thousands of small
kernels, each a few microseconds of GPU work, and a host sync wherever a tensor's size or value is read.
This script runs the same workload on the CPU with the lattice forced onto the code CUDA runs (its
gather filter and broadcast rank; the CPU defaults are the CSR filter and pairwise ranks) and counts,
through a torch dispatch mode, every eager op that does work (view ops excluded: on CUDA nearly all of
these are a kernel launch, a few work on small host tensors) and every op that reads a value back to
the host (item(), int(), nonzero: on CUDA a sync; device-to-host copies are invisible on a CPU run,
two per lattice). The counts are properties of the code, so they compare across commits and machines
where timings cannot; the mean-field loop's share comes from the same mining run with 1 iteration.
Writes reports/bench/kernel_count.json.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from common import BENCH_DIR, REPO, Inputs, energy_loss, machine_info, read_params, write_report
from torch.utils._python_dispatch import TorchDispatchMode

import rrm.method.crf_torch
import rrm.method.energy_loss
import rrm.method.permutohedral
from rrm.method.permutohedral import PermutohedralLattice
from rrm.method.reliable_torch import mine_batch_torch

# Ops that return a host value (item(), int(), a data-dependent size): each is a device sync on CUDA.
HOST_SYNC_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.unique", "aten._unique2",
                 "aten.masked_select", "aten.repeat_interleave", "aten.equal", "aten.is_nonzero"}


class OpCounter(TorchDispatchMode):
    """Counts dispatched ops that do work (not views), by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if not func.is_view:
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    def summary(self) -> dict[str, object]:
        syncs = {name: n for name, n in self.ops.items() if name in HOST_SYNC_OPS}
        return {"ops": sum(self.ops.values()), "host_syncs": sum(syncs.values()), "sync_ops": syncs,
                "top_ops": dict(self.ops.most_common(8))}


@contextmanager
def cuda_code_path() -> Iterator[None]:
    """Lattices built by the CRF and the energy loss use the gather filter and the broadcast rank, as
    they do on CUDA (the cumsum and searchsorted variants differ by 2 ops)."""
    original = PermutohedralLattice
    rank = getattr(rrm.method.permutohedral, "_descending_rank", None)  # None: a commit before the CUDA rank

    class Gather(original):  # type: ignore[misc, valid-type]
        def __init__(self, features: torch.Tensor, groups: torch.Tensor | None = None, *,
                     sparse: bool | None = None) -> None:
            super().__init__(features, groups, sparse=False)

    modules = (rrm.method.crf_torch, rrm.method.energy_loss)
    for module in modules:
        module.PermutohedralLattice = Gather  # type: ignore[attr-defined]
    if rank is not None:
        rrm.method.permutohedral._descending_rank = rrm.method.permutohedral._rank_broadcast
    try:
        yield
    finally:
        for module in modules:
            module.PermutohedralLattice = original  # type: ignore[attr-defined]
        if rank is not None:
            rrm.method.permutohedral._descending_rank = rank


def count(fn: Callable[[], object]) -> dict[str, object]:
    fn()  # warm-up: first-call work (lazy inits) is not part of a training step
    with OpCounter() as counter:
        fn()
    return counter.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop", type=int, default=321)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "kernel_count.json")
    args = parser.parse_args()
    params = read_params(args.params)
    inputs = Inputs(args.crop, args.batch, torch.device("cpu"))
    mining = params.mining.params
    one_iteration = replace(mining, crf=replace(mining.crf, iterations=1))
    energy = params.train_onestep.energy
    target = mine_batch_torch(inputs.raw, inputs.cams, inputs.labels, mining, roi=inputs.roi)

    def mine(settings: object) -> Callable[[], object]:
        return lambda: mine_batch_torch(inputs.raw, inputs.cams, inputs.labels, settings, roi=inputs.roi)

    def energy_fwd_bwd() -> None:
        logits = inputs.logits.detach().requires_grad_(True)
        energy_loss(inputs.raw, logits.softmax(1), inputs.roi, target, energy).backward()

    with cuda_code_path():
        out = {"mining": count(mine(mining)), "mining_one_iteration": count(mine(one_iteration)),
               "energy_loss_fwd_bwd": count(energy_fwd_bwd)}
    iterations = mining.crf.iterations
    loop = out["mining"]["ops"] - out["mining_one_iteration"]["ops"]  # type: ignore[operator]
    out["mean_field_ops_per_iteration"] = loop / (iterations - 1) if iterations > 1 else None
    out["total_ops"] = out["mining"]["ops"] + out["energy_loss_fwd_bwd"]["ops"]  # type: ignore[operator]
    out["total_host_syncs"] = (out["mining"]["host_syncs"]  # type: ignore[operator]
                               + out["energy_loss_fwd_bwd"]["host_syncs"])
    out["settings"] = {"crop": args.crop, "batch": args.batch, "crf_iterations": iterations, "rule": mining.rule}
    out["machine"] = machine_info()
    for part in ("mining", "mining_one_iteration", "energy_loss_fwd_bwd"):
        print(f"{part:26s} {out[part]['ops']:5d} ops, {out[part]['host_syncs']:3d} host syncs")
    print(f"mean-field loop: {out['mean_field_ops_per_iteration']:.0f} ops per iteration "
          f"(x {iterations}); total {out['total_ops']} ops, {out['total_host_syncs']} host syncs")
    write_report(args.out, out)


if __name__ == "__main__":
    main()
