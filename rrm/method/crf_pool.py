"""A persistent pool of CRF worker processes (runtime plumbing around `rrm.method.crf`).

It sits in `rrm.method`, below both `rrm.engine` (training, evaluation) and `rrm.ops`
(``dense_crf(backend="pydensecrf")``), so neither layer imports the other.

RRM runs the dense CRF of equation 5 on every training image at every step (twice per image in the
authors' code), so the CRFs of a whole batch are farmed out to a process pool that lives as long as
the training run. Besides single CRFs (``map_async``), the pool runs any picklable function (``submit``):
reliable-region mining (`rrm.engine.mining`) sends each image's CRFs and its labelling rule to one
worker, so only the uint8 labels travel back. This module imports numpy and pydensecrf only (no torch):
spawned workers start fast.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from rrm.method.crf import check_inputs, dense_crf
from rrm.method.crf_params import CRFParams

T = TypeVar("T")


def _run_job(job: tuple[np.ndarray, np.ndarray, CRFParams]) -> np.ndarray:
    return dense_crf(*job)


_SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _init_worker() -> None:
    """Each worker computes on one core: the pool itself is the parallelism. pydensecrf is serial; a
    library that a task imports later (or torch, which a spawned worker imports when the parent's
    main module does) must not start a thread per core on top of it."""
    for name in _SINGLE_THREAD_ENV:
        os.environ[name] = "1"
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


@contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Start processes without the parent's main script.

    A 'spawn' child re-runs the parent's main script before its first task (multiprocessing's
    'prepare' step), so that functions defined there unpickle. The pool's tasks are rrm's module-level
    functions, but a stage script or the CLI imports torch and torchvision at the top: seconds of CPU
    per worker, taken from the training or evaluation process they start next to (2 cores). While
    __main__ is a bare module, the children import only what their tasks need.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class Handle(Protocol):
    """What the pool's submit / map_async return: .get() waits for the result."""

    def get(self, timeout: float | None = None) -> Any: ...


class _Ready(Generic[T]):
    """Handle for work done inline: computed on .get(), so the caller's own work still runs first."""

    def __init__(self, compute: Callable[[], T]) -> None:
        self._compute = compute
        self._done = False
        self._value: T | None = None

    def get(self, timeout: float | None = None) -> T:
        if not self._done:
            self._value, self._done = self._compute(), True
        return self._value  # type: ignore[return-value]


class _Pending:
    """Handle over pool futures kept in input order. A worker that dies (e.g. a crash inside the C++
    CRF) makes .get() raise BrokenProcessPool instead of hanging the training loop."""

    def __init__(self, futures: list[Future]) -> None:
        self._futures = futures

    def get(self, timeout: float | None = None) -> list[np.ndarray]:
        return [future.result(timeout) for future in self._futures]


class _Submitted(Generic[T]):
    """Handle over one pool future (see _Pending)."""

    def __init__(self, future: Future) -> None:
        self._future = future

    def get(self, timeout: float | None = None) -> T:
        return self._future.result(timeout)


class CRFPool:
    """Persistent pool of CRF worker processes ('spawn' start: safe next to torch's threads).

    processes=None uses os.cpu_count(); 0 or 1 runs every CRF inline in this process. Create once,
    reuse every step, close at the end (or use as a context manager). Workers run single-threaded
    (see _init_worker) and all start on first use, without the main script (see _main_script_hidden),
    so tasks must be functions of importable modules; ``workers`` is how many run in parallel (1 inline).
    """

    def __init__(self, processes: int | None = None) -> None:
        if processes is None:
            processes = os.cpu_count() or 1
        if not isinstance(processes, int) or processes < 0:
            raise ValueError(f"processes must be None or an int >= 0, got {processes!r}")
        self.processes, self._closed, self._started = processes, False, False
        self._pool = (
            ProcessPoolExecutor(
                processes, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
            )
            if processes > 1
            else None
        )

    @property
    def workers(self) -> int:
        """Tasks that run at the same time: the worker processes, or 1 when everything runs inline."""
        return self.processes if self._pool is not None else 1

    def _executor(self) -> ProcessPoolExecutor:
        """The executor, its workers started: a spawning executor starts one per submit until all run."""
        assert self._pool is not None
        if not self._started:
            with _main_script_hidden():
                for _ in range(self.processes):
                    self._pool.submit(os.getpid)
            self._started = True
        return self._pool

    def submit(self, fn: Callable[..., T], *args: object) -> _Ready[T] | _Submitted[T]:
        """Run fn(*args) in a worker (fn and args must pickle; fn a module-level function); the
        handle's .get() returns its result. Inline pools compute it on .get(), in this process."""
        if self._closed:
            raise RuntimeError("CRFPool is closed")
        if self._pool is None:
            return _Ready(lambda: fn(*args))
        if getattr(fn, "__module__", None) == "__main__":  # it would kill the worker that unpickles it
            raise ValueError(f"CRFPool.submit: {fn.__qualname__} is defined in the main script, which the "
                             "workers do not import; move it to a module")
        return _Submitted(self._executor().submit(fn, *args))

    def map_async(
        self,
        images: Sequence[np.ndarray],
        probs: Sequence[np.ndarray],
        params: CRFParams | Sequence[CRFParams],
    ) -> _Ready[list[np.ndarray]] | _Pending:
        """Submit the CRFs; the returned handle's .get() gives the posteriors in input order."""
        if self._closed:
            raise RuntimeError("CRFPool is closed")
        jobs = self._jobs(images, probs, params)
        if self._pool is None:
            return _Ready(lambda: [_run_job(job) for job in jobs])
        # Largest jobs are queued first, one job per task: the workers finish close together.
        futures: list[Future | None] = [None] * len(jobs)
        executor = self._executor()
        for i in sorted(range(len(jobs)), key=lambda i: -jobs[i][1].size):
            futures[i] = executor.submit(_run_job, jobs[i])
        return _Pending(futures)  # type: ignore[arg-type]

    @staticmethod
    def _jobs(
        images: Sequence[np.ndarray], probs: Sequence[np.ndarray], params: CRFParams | Sequence[CRFParams]
    ) -> list[tuple[np.ndarray, np.ndarray, CRFParams]]:
        images, probs = list(images), list(probs)
        if len(images) != len(probs):
            raise ValueError(
                f"images and probs must pair up, got {len(images)} images and {len(probs)} probs"
            )
        params_list = [params] * len(images) if isinstance(params, CRFParams) else list(params)
        if len(params_list) != len(images):
            raise ValueError(f"params must be one CRFParams or one per image, got {len(params_list)}")
        for image, prob in zip(images, probs, strict=True):
            check_inputs(image, prob)  # fail here, in the caller, rather than inside a worker
        return [
            (np.ascontiguousarray(image), np.ascontiguousarray(prob, dtype=np.float32), p)
            for image, prob, p in zip(images, probs, params_list, strict=True)
        ]

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> CRFPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
