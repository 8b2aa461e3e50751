"""Data-parallel training over MPI (mpi4py + Open MPI): one model, N processes, one gradient sum per step.

``mpirun -np N volnet train ...`` (or ``volnet train --workers N``, which launches that) trains the same
model as one process does, N times as wide:

- every rank draws the same global batch of B images (same shuffle, same crops and flips: batch i of
  epoch e depends only on (seed, e, i), whichever rank an image lands on) and keeps its shard, a
  contiguous slice of about B/N images;
- every rank computes the mean loss of its shard and its gradients; scaled by n_rank/B they are summed
  over the ranks with ONE in-place ``Allreduce`` on a flat contiguous buffer, which gives every rank the
  gradient of the global batch's mean loss, as one process computes it;
- every rank applies the same optimizer step, so the weights stay equal (they start equal: rank 0's
  are broadcast, as Horovod's ``broadcast_parameters`` does);
- rank 0 alone writes the run directory (checkpoints in the one-process format, so ``--resume`` works
  with any N) and prints progress.

BatchNorm normalises with each rank's own shard statistics by default (as PyTorch DDP does); with
``sync_bn`` (``--sync-bn``) with the global batch's, through two small allreduces per BN layer forward
and two backward (:mod:`volnet.ops.batchnorm`), which makes the run equal to one process.
A rank that dies ends the job: ``mpirun`` stops the others and exits non-zero. A rank that hangs leaves
the others blocked in the allreduce: a watchdog thread on every rank aborts the job when no step has
finished for ``VOLNET_MPI_TIMEOUT`` seconds (default 300; the first step and validation passes count
as steps).
Cost per step: one allreduce of all gradients, 2(N-1)/N x gradient bytes on the slowest link (ring).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import numpy as np

from volnet.errors import VolnetError
from volnet.train.callbacks import Callback

__all__ = ["Distributed", "WatchdogCallback", "from_environment", "mpi_rank", "mpi_world_size",
           "watchdog_timeout"]

INSTALL_HINT = "pip install 'volnet[mpi]' (mpi4py and Open MPI's wheels)"


def mpi_world_size() -> int:
    """Processes in this MPI job according to the launcher's environment (1 outside ``mpirun``)."""
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        v = os.environ.get(var)
        if v and v.isdigit():
            return int(v)
    return 1


def mpi_rank() -> int:
    """This process's rank according to the launcher's environment (0 outside ``mpirun``)."""
    for var in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        v = os.environ.get(var)
        if v and v.isdigit():
            return int(v)
    return 0


class Distributed:
    """One rank of a data-parallel job over the MPI communicator ``comm`` (``MPI.COMM_WORLD``)."""

    def __init__(self, comm: Any = None, sync_bn: bool = False) -> None:
        try:
            from mpi4py import MPI
        except ImportError:
            raise VolnetError(f"data-parallel training needs mpi4py: {INSTALL_HINT}") from None
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank: int = int(self.comm.Get_rank())
        self.size: int = int(self.comm.Get_size())
        #: BatchNorm statistics over the global batch (``--sync-bn``): the trainer hands this object to
        #: every BN layer, which calls :meth:`sum` and reads :attr:`weight` (this rank's n / B)
        self.sync_bn = bool(sync_bn)
        self.weight = 1.0 / self.size
        self._buf: np.ndarray | None = None

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's rows of a global batch of n: contiguous, sizes differing by at most one.

        >>> class One(Distributed):
        ...     def __init__(self, rank, size): self.rank, self.size = rank, size
        >>> [One(r, 3).shard(10) for r in range(3)]
        [slice(0, 4, None), slice(4, 7, None), slice(7, 10, None)]
        """
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def broadcast(self, arrays: dict[str, np.ndarray]) -> None:
        """Overwrite every array with rank 0's values (in place, in sorted name order on all ranks)."""
        for k in sorted(arrays):
            a = arrays[k]
            if not a.flags.c_contiguous:
                tmp = np.ascontiguousarray(a)
                self.comm.Bcast(tmp, root=0)
                a[...] = tmp
            else:
                self.comm.Bcast(a, root=0)

    def allreduce_grads(self, grads: dict[str, np.ndarray], weight: float) -> None:
        """grads[k] <- sum over ranks of weight_rank * grads_rank[k], in place: one ``Allreduce`` on a flat
        buffer (grads of one dtype; float64 buffers otherwise)."""
        names = sorted(grads)
        dtype = np.result_type(*[grads[k].dtype for k in names]) if names else np.float32
        total = sum(grads[k].size for k in names)
        if self._buf is None or self._buf.size != total or self._buf.dtype != dtype:
            self._buf = np.empty(total, dtype=dtype)
        buf, i = self._buf, 0
        for k in names:
            g = grads[k]
            np.multiply(g.reshape(-1), weight, out=buf[i:i + g.size], casting="unsafe")
            i += g.size
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        i = 0
        for k in names:
            g = grads[k]
            g[...] = buf[i:i + g.size].reshape(g.shape)
            i += g.size

    def sum(self, values: np.ndarray | list[float]) -> np.ndarray:
        """The element-wise sum over ranks of a small float64 vector (loss, correct, seen)."""
        v = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, v, op=self.MPI.SUM)
        return v

    def gather_rows(self, a: np.ndarray) -> np.ndarray:
        """Every rank's ``a`` (rows of one shape and dtype) stacked in rank order, on every rank
        (``Allgatherv``: the rows of :meth:`shard` come back in the order of the whole array)."""
        a = np.ascontiguousarray(a)
        counts = np.array(self.comm.allgather(int(a.size)), dtype=np.int64)
        out = np.empty((int(counts.sum()) // max(int(np.prod(a.shape[1:])), 1), *a.shape[1:]), dtype=a.dtype)
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.comm.Allgatherv(a, [out, (counts, displs)])
        return out

    def abort(self, code: int) -> None:
        """End every rank of the job now with exit status ``code`` (``MPI_Abort``)."""
        self.comm.Abort(code)

    def barrier(self) -> None:
        self.comm.Barrier()

    def start_watchdog(self, timeout: float) -> None:
        """Abort the whole job when no step finishes for ``timeout`` seconds on this rank (a rank that
        hangs leaves the others waiting in the allreduce: their watchdogs end the job). :meth:`alive`
        resets the clock; :meth:`stop_watchdog` ends the watch."""
        self._timeout, self._last = float(timeout), time.monotonic()
        if getattr(self, "_watch", None) is not None:
            return
        self._stop = threading.Event()

        def watch() -> None:
            while not self._stop.wait(min(1.0, self._timeout / 4)):
                idle = time.monotonic() - self._last
                if idle > self._timeout:
                    print(f"volnet train: rank {self.rank}: no training step finished in {idle:.0f} s "
                          f"(another rank hangs or died); stopping the job", file=sys.stderr, flush=True)
                    self.abort(3)

        self._watch = threading.Thread(target=watch, name="volnet-mpi-watchdog", daemon=True)
        self._watch.start()

    def alive(self) -> None:
        """This rank finished a step (or an epoch's validation): reset the watchdog's clock."""
        self._last = time.monotonic()

    def stop_watchdog(self) -> None:
        if getattr(self, "_watch", None) is not None:
            self._stop.set()
            self._watch = None


def from_environment(sync_bn: bool = False) -> Distributed | None:
    """The job's :class:`Distributed` when this process runs under ``mpirun`` with N > 1, else None."""
    if mpi_world_size() <= 1:
        return None
    return Distributed(sync_bn=sync_bn)


def watchdog_timeout() -> float:
    """Seconds without a finished step before a data-parallel job stops (``VOLNET_MPI_TIMEOUT``)."""
    try:
        return max(1.0, float(os.environ.get("VOLNET_MPI_TIMEOUT", "300")))
    except ValueError:
        raise VolnetError("VOLNET_MPI_TIMEOUT must be a number of seconds") from None


class WatchdogCallback(Callback):
    """Trainer callback: start the rank's watchdog with the run, reset it at every step and epoch end."""

    def __init__(self, dist: Distributed, timeout: float) -> None:
        self.dist, self.timeout = dist, timeout

    def on_train_begin(self, trainer: Any) -> None:
        self.dist.start_watchdog(self.timeout)

    def on_epoch_begin(self, trainer: Any) -> None:
        self.dist.alive()

    def on_step_end(self, trainer: Any, log: Any) -> None:
        self.dist.alive()

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        self.dist.alive()

    def on_train_end(self, trainer: Any, status: str) -> None:
        self.dist.stop_watchdog()
