"""torch.distributed for the CLIs: one process or K ranks started by torchrun, the same code.

    torchrun --standalone --nproc_per_node K -m soae_core.evaluate ...
    torchrun --standalone --nproc_per_node K -m soae_core.train ...

:func:`init_distributed` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and starts a process group — gloo on the CPU, nccl on CUDA, each
rank on ``cuda:LOCAL_RANK`` (see :mod:`soae_core.device`). Without torchrun it returns a
one-process context and starts nothing, so every caller runs one code path.

Work is split into *units* whose results do not depend on which rank runs them (an evaluation
unit is a fixed block of image indices of one cell, seeded exactly as in one process). Ranks take
units from a shared counter in the process group's store (dynamic load balancing: a rank that
finishes early takes the next unit), and :func:`run_units` gathers every result on rank 0 in
unit order. Rank 0 alone writes files (:attr:`DistContext.is_main`).

Written here by hand: the unit queue (a few lines on the store's atomic ``add``); everything else
is torch.distributed and torchrun.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from soae_core.device import resolve_device, to_cpu

U = TypeVar("U")
R = TypeVar("R")
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank in [0, world_size), its local rank on the node, its device.

    backend: "gloo" or "nccl" under torchrun, None for a plain one-process run.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on the rank that writes checkpoints, cards, logs and reports (rank 0)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when a process group is running (launched by torchrun)."""
        return self.backend is not None


def launched_by_torchrun() -> bool:
    """True when torchrun's environment variables are all set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def backend_for(device: torch.device) -> str:
    """The process-group backend for ``device``: nccl on CUDA, gloo on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: str | torch.device | None = "auto") -> DistContext:
    """The context of this process, starting the process group when launched by torchrun.

    ``device`` follows :func:`soae_core.device.resolve_device` (``auto``: ``cuda:LOCAL_RANK`` when
    CUDA is there, else the CPU). Idempotent: a second call reuses the running group.
    """
    resolved = resolve_device(device)
    if not launched_by_torchrun():
        return DistContext(device=resolved)
    backend = backend_for(resolved)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=resolved if resolved.type == "cuda" else None)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ["LOCAL_RANK"]), device=resolved, backend=backend)


def shutdown(ctx: DistContext) -> None:
    """Stop the process group started by :func:`init_distributed` (no-op for one process)."""
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if ctx.is_distributed:
        dist.barrier()


def broadcast(value: Any, ctx: DistContext) -> Any:
    """Rank 0's ``value`` on every rank (picklable; tensors are moved to the CPU first)."""
    if not ctx.is_distributed:
        return value
    box = [to_cpu(value) if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, ctx: DistContext) -> list[Any] | None:
    """Every rank's ``value`` on rank 0, in rank order (None on the other ranks).

    Tensors inside ``value`` are moved to the CPU before pickling (:func:`soae_core.device.to_cpu`).
    """
    value = to_cpu(value)
    if not ctx.is_distributed:
        return [value]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(value, out, dst=0)
    return out


def all_reduce_sum(values: Sequence[float], ctx: DistContext) -> list[float]:
    """Element-wise sums over ranks of a few numbers (float64), on every rank."""
    tensor = torch.tensor(list(values), dtype=torch.float64,
                          device=ctx.device if ctx.backend == "nccl" else "cpu")
    if ctx.is_distributed:
        dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def index_blocks(n: int, block: int) -> list[range]:
    """[0, n) cut into consecutive blocks of ``block`` indices (the last may be shorter).

    The blocks depend on n and block only, never on the number of ranks: a result computed per
    block is the same whichever rank computes it.
    """
    if n < 0 or block < 1:
        raise ValueError(f"need n >= 0 and block >= 1, got n={n}, block={block}")
    return [range(start, min(start + block, n)) for start in range(0, n, block)]


def epoch_batches(n: int, global_batch: int, seed: int, epoch: int, ctx: DistContext) -> list[torch.Tensor]:
    """This rank's index batches (int64) for one training epoch over a dataset of n examples.

    A :class:`~torch.utils.data.DistributedSampler` (shuffled from ``seed + epoch``) deals the
    epoch's permutation out to the ranks in turn, and each rank cuts its share into batches of
    ``global_batch / world_size``: step s of rank r holds permutation positions
    ``s·global_batch + r + world_size·j``, so the ranks' step-s batches together are exactly the
    one-process batch s (``torch.randperm(n, seed + epoch)`` cut into ``global_batch`` blocks).
    When world_size does not divide n the sampler repeats a few examples to even the ranks out.
    """
    if global_batch % ctx.world_size:
        raise ValueError(f"batch size {global_batch} (the global batch) must be divisible by the number of "
                         f"ranks ({ctx.world_size}): each rank takes an equal share")
    sampler = DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    order = torch.tensor(list(sampler), dtype=torch.long)
    return list(order.split(global_batch // ctx.world_size))


def rank_rows(ctx: DistContext) -> slice:
    """The rows of a global batch's tensor that belong to this rank's batch (see :func:`epoch_batches`).

    Random noise for a batch is drawn for the global batch on every rank (same seed, same draw)
    and each rank keeps its rows, so every example gets the noise it would get in one process.
    """
    return slice(ctx.rank, None, ctx.world_size)


_QUEUE_COUNTER = [0]


def _next_unit_counter(ctx: DistContext) -> Callable[[], int]:
    """A function returning 0, 1, 2, … shared by all ranks (each value handed out once)."""
    if not ctx.is_distributed:
        counter = iter(range(sys.maxsize))
        return lambda: next(counter)
    _QUEUE_COUNTER[0] += 1  # every rank calls run_units in the same order, so the keys agree
    key = f"soae_units_{_QUEUE_COUNTER[0]}"
    store = dist.distributed_c10d._get_default_store()
    return lambda: int(store.add(key, 1)) - 1


@dataclass
class UnitsRun:
    """What :func:`run_units` returns on rank 0.

    results: one per unit, in unit order. ranks: the rank that ran each unit.
    busy_s: seconds each rank spent in units (index = rank). wall_s: this call's seconds on rank 0.
    """

    results: list[Any]
    ranks: list[int]
    busy_s: list[float]
    wall_s: float


def run_units(units: Sequence[U], work: Callable[[U], R], ctx: DistContext,
              order: Sequence[int] | None = None, progress: str | None = None) -> UnitsRun | None:
    """Run ``work(unit)`` for every unit, spread over the ranks; rank 0 gets everything back.

    Ranks take the next unit from a shared counter, so a rank that finishes early takes more.
    ``order``: the sequence in which units are handed out (e.g. costly first), default 0, 1, ….
    ``progress``: a label for a progress bar on rank 0 (units handed out over all ranks), None for none.
    Each result is moved to the CPU. Returns a :class:`UnitsRun` on rank 0 and None elsewhere.
    All ranks must call this with the same units; results must be picklable.
    """
    started = time.perf_counter()
    order = list(range(len(units))) if order is None else list(order)
    if sorted(order) != list(range(len(units))):
        raise ValueError(f"order must be a permutation of 0 … {len(units) - 1}")
    take = _next_unit_counter(ctx)
    mine: list[tuple[int, Any]] = []
    busy = 0.0
    bar = tqdm(total=len(order), desc=progress, disable=progress is None or not ctx.is_main, file=sys.stderr,
               unit="unit", mininterval=2.0)
    while (position := take()) < len(order):
        bar.update(min(position + 1, len(order)) - bar.n)  # the shared counter: every rank's progress
        index = order[position]
        unit_start = time.perf_counter()
        mine.append((index, to_cpu(work(units[index]))))
        busy += time.perf_counter() - unit_start
    bar.close()
    gathered = gather((ctx.rank, busy, mine), ctx)
    if gathered is None:
        return None
    results: list[Any] = [None] * len(units)
    ranks = [-1] * len(units)
    busy_s = [0.0] * ctx.world_size
    for rank, rank_busy, pairs in gathered:
        busy_s[rank] = rank_busy
        for index, result in pairs:
            results[index], ranks[index] = result, rank
    missing = [i for i, r in enumerate(ranks) if r < 0]
    if missing:
        raise RuntimeError(f"units {missing[:10]} were run by no rank")
    return UnitsRun(results=results, ranks=ranks, busy_s=busy_s, wall_s=time.perf_counter() - started)


def torchrun_command(module: str, args: Sequence[str], nproc: int) -> list[str]:
    """The command launching ``python -m module args`` as ``nproc`` ranks on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", module, *args]


def launch_local(module: str, args: Sequence[str], nproc: int) -> int:
    """Run ``module`` as ``nproc`` torchrun ranks on this machine and wait; returns the exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.call(torchrun_command(module, args, nproc), env=env)
