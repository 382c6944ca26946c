"""Reliable region mining of one training batch: CRF worker pool vs the same CRFs one after another.

    python benchmarks/mining.py [--workers 2 --runs 9 --crop 321]

Four real VOC sample photos, cropped (and padded) to 321x321 like a training batch; CAMs are made from
the ground-truth masks (common.fake_cams). Rule "code": two CRFs per image, eight per batch. Both
variants run the same code per image (its two CRFs, sharing their kernels, then its rule): the pool
sends each image to a worker, the sequential variant runs them one after another in this process. Runs alternate pool / inline so that load from
other processes hits both alike; medians are reported (also the median of the per-run ratios, which
drifts of the machine's speed between runs affect less), with the CPU share other processes took
meanwhile (read from /proc; a busy neighbour steals the pool's second core). Writes
reports/bench/mining.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from common import BENCH_DIR, NAMES, REPO, crop_batch, fake_cams, machine_info, read_params, write_report

from rrm.data.datasets import IGNORE_INDEX, VOC
from rrm.engine.metrics import ConfusionMatrix
from rrm.engine.mining import mine_batch
from rrm.method.crf_pool import CRFPool


def timed(fn) -> tuple[float, float, np.ndarray]:
    """(wall seconds, CPU seconds other processes used meanwhile, result of fn())."""
    before = cpu_seconds_by_pid()
    start = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    return wall, foreign_cpu_seconds(before, cpu_seconds_by_pid()), out


def cpu_seconds_by_pid() -> dict[int, tuple[int, float]]:
    """{pid: (parent pid, user + system CPU seconds)} for every process visible in /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        out[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def foreign_cpu_seconds(before: dict, after: dict) -> float:
    """CPU seconds spent by processes outside this one and its children (other users of the machine):
    with them busy, a 2-worker pool cannot get 2 cores, so the speedup must be read with this number."""
    ours = {os.getpid()} | {pid for pid, (ppid, _) in after.items() if ppid == os.getpid()}
    return sum(cpu - before.get(pid, (0, 0.0))[1] for pid, (_, cpu) in after.items() if pid not in ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--crop", type=int, default=321)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "mining.json")
    args = parser.parse_args()

    images, masks, roi = crop_batch(args.crop)
    cams, labels = fake_cams(masks)
    params = read_params(REPO / "params.yaml").mining.params  # the pipeline's mining (rule code)
    load_before = os.getloadavg()
    if not Path("/proc").is_dir():
        raise RuntimeError("this benchmark reads /proc to measure other processes' CPU use (Linux only)")
    inline = CRFPool(processes=0)
    pool_times, seq_times = [], []
    with CRFPool(args.workers) as pool:
        mine_batch(images, cams, labels, params, pool, roi)  # warm-up: workers import their modules
        foreign_pool = foreign_seq = 0.0
        for _ in range(args.runs):
            t_pool, f_pool, pooled = timed(lambda: mine_batch(images, cams, labels, params, pool, roi))
            t_seq, f_seq, sequential = timed(lambda: mine_batch(images, cams, labels, params, inline, roi))
            if not np.array_equal(pooled, sequential):
                raise RuntimeError("pool and sequential mining disagree")
            pool_times.append(t_pool)
            seq_times.append(t_seq)
            foreign_pool, foreign_seq = foreign_pool + f_pool, foreign_seq + f_seq
    cores = os.cpu_count() or 1
    # Share of the machine other processes took while each variant ran: during the pool runs it is CPU
    # the two workers did not get; during the sequential runs they mostly use the core left idle.
    share_pool, share_seq = foreign_pool / (sum(pool_times) * cores), foreign_seq / (sum(seq_times) * cores)

    quality = ConfusionMatrix(VOC.num_classes)
    quality.update(masks, sequential)  # precision of the mined labels on their labelled pixels
    labelled = float((sequential[roi] != IGNORE_INDEX).mean())
    pool_s, seq_s = statistics.median(pool_times), statistics.median(seq_times)
    result = {
        "batch": len(NAMES), "crop": args.crop, "rule": params.rule, "crfs_per_batch": 2 * len(NAMES),
        "workers": args.workers, "runs": args.runs,
        "pool_s_median": pool_s, "sequential_s_median": seq_s, "speedup": seq_s / pool_s,
        "pool_s_min": min(pool_times), "sequential_s_min": min(seq_times),
        "speedup_of_minima": min(seq_times) / min(pool_times),  # least disturbed by other processes
        "speedup_median_of_runs": statistics.median(s / p for s, p in zip(seq_times, pool_times, strict=True)),
        "pool_s": pool_times, "sequential_s": seq_times,
        "labelled_fraction": labelled, "label_pixel_precision": quality.pixel_accuracy(),
        "other_processes_cpu_share_during_pool": share_pool,
        "other_processes_cpu_share_during_sequential": share_seq,
        "machine": {**machine_info(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
    }
    print(f"mining, batch {len(NAMES)} x {args.crop}^2, rule code ({2 * len(NAMES)} CRFs): "
          f"pool({args.workers}) {pool_s:.3f} s, sequential {seq_s:.3f} s, speedup {seq_s / pool_s:.2f}x "
          f"(median of {args.runs}; median of the per-run ratios {result['speedup_median_of_runs']:.2f}x); "
          f"labelled {labelled:.1%}, precision {quality.pixel_accuracy():.1%}")
    print(f"other processes took {share_pool:.0%} of the CPU during the pool runs, {share_seq:.0%} during the "
          "sequential ones" + (" -- not an idle machine: the speedup is understated" if share_pool > 0.05 else ""))
    write_report(args.out, result)


if __name__ == "__main__":
    main()
