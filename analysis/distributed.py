"""Scale-out (docs/method.md#scale-out): the long analyses split their work into tasks
(sample batches, configurations) and hand them to the current executor, in-process by
default or a Dask cluster inside :func:`executor_for`.

Both executors run the same task functions, ``task(shared, item)``, and return the
results in the order of ``items``; the callers fold them with the same reductions either
way, so a result does not depend on the executor or the number of workers. On a cluster
``shared`` (the model and everything the tasks have in common) is scattered once to every
worker (broadcast) rather than sent with each task; a task whose worker dies is retried
by Dask, and one that cannot be finished fails the whole command with one line, never a
partial result.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from emulator.errors import MixaccError

from .progress import progress, progress_bar

__all__ = ["InProcess", "DaskExecutor", "run_tasks", "executor_for", "current_executor", "using", "DaskMissing",
           "TasksLost", "DASK_HINT", "cluster_record"]

DASK_HINT = "pip install 'mixacc[dask]'"


class DaskMissing(MixaccError):
    """--workers / --scheduler without dask installed."""


class TasksLost(MixaccError):
    """Tasks a cluster could not finish (their workers died more often than Dask retries)."""


class InProcess:
    """Every task in this process, one after the other."""

    record: "dict | None" = None

    def map(self, task: Callable, shared: Any, items: Sequence, desc: str = "") -> list:
        return [task(shared, item) for item in progress(items, desc=desc, total=len(items))]


@dataclass
class DaskExecutor:
    """Tasks on a Dask cluster through ``client``; ``record`` says which (for the JSON)."""

    client: Any
    record: dict

    def map(self, task: Callable, shared: Any, items: Sequence, desc: str = "") -> list:
        from distributed import KilledWorker, as_completed

        if not items:
            return []
        handle = self.client.scatter(shared, broadcast=True, hash=False)
        futures = [self.client.submit(task, handle, item, pure=False) for item in items]
        position = {f.key: k for k, f in enumerate(futures)}
        results: list = [None] * len(futures)
        bar = progress_bar(len(futures), desc)
        try:
            for future in as_completed(futures):
                if future.status == "error" and not isinstance(future.exception(), KilledWorker):
                    raise future.exception()  # the task's own error (bad input), as in-process
                if future.status != "finished":
                    raise TasksLost(_lost_message(futures, future, desc))
                results[position[future.key]] = future.result()
                bar.update(1)
        finally:
            bar.close()
            self.client.cancel(futures + [handle])
        return results


def _lost_message(futures, failed, desc: str) -> str:
    """One line: how many tasks the cluster lost, and why the first of them was."""
    lost = sum(f.status not in ("finished", "pending") for f in futures)
    cause = failed.exception() if failed.status == "error" else None
    reason = f"{type(cause).__name__}: {str(cause).splitlines()[0]}" if cause is not None else failed.status
    return f"the cluster lost {lost} of {len(futures)} {desc or 'tasks'} tasks ({reason}); no result was written"


# a worker process is one core's worth: its numba kernels and BLAS run single-threaded
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_CURRENT: contextvars.ContextVar = contextvars.ContextVar("mixacc_executor", default=InProcess())


def current_executor():
    """The executor :func:`run_tasks` uses (in-process unless inside :func:`using`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def using(executor) -> Iterator:
    """Run the tasks of the analyses inside the block on ``executor``."""
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)


def run_tasks(task: Callable, shared: Any, items: Sequence, desc: str = "") -> list:
    """[task(shared, item) for item in items] on the current executor, in ``items`` order."""
    return current_executor().map(task, shared, list(items), desc)


def _import_dask():
    try:
        import distributed
    except ImportError:
        raise DaskMissing(f"--workers and --scheduler need Dask: {DASK_HINT}") from None
    return distributed


@contextlib.contextmanager
def executor_for(workers: "int | None" = None, scheduler: "str | None" = None) -> Iterator:
    """The executor of ``--workers N`` (a LocalCluster of N single-threaded processes,
    their numba and BLAS threads limited to one, started and closed here) or ``--scheduler ADDRESS`` (an existing cluster); in-process
    without either. Made current for the block; the dashboard address goes to stderr."""
    if workers is None and scheduler is None:
        yield current_executor()
        return
    if workers is not None and scheduler is not None:
        raise MixaccError("give --workers or --scheduler, not both.")
    if workers is not None and workers < 1:
        raise MixaccError(f"--workers == {workers}, must be >= 1.")
    distributed = _import_dask()
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = stack.enter_context(distributed.Client(scheduler, timeout="10s"))
            except OSError as exc:
                raise MixaccError(f"--scheduler {scheduler}: cannot connect ({str(exc).splitlines()[0]}).") from None
            record = {"scheduler": scheduler}
        else:
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                silence_logs=logging.ERROR, env=dict(ONE_THREAD)))
            client = stack.enter_context(distributed.Client(cluster))
            record = {"workers": workers}
            print(f"mixacc: Dask dashboard at {client.dashboard_link}", file=sys.stderr)
        executor = DaskExecutor(client, record)
        with using(executor):
            yield executor


def cluster_record() -> "dict | None":
    """What ran the tasks, for a JSON record: None in-process, else workers or scheduler."""
    return current_executor().record
