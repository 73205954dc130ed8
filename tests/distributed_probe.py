"""Run by tests/test_distributed.py under torchrun (2 ranks, gloo) and without it (1 process).

Writes, from rank 0 only, a JSON file with what the helpers of soae_core.distributed returned.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from soae_core.experiments.distributed import (
    all_reduce_sum,
    broadcast,
    index_blocks,
    init_distributed,
    run_units,
    shutdown,
)


def work(block: range) -> dict:
    """A unit whose result depends on the unit only: seeded noise for each index of the block."""
    time.sleep(0.05)  # long enough that both ranks take units
    rows = [torch.rand(3, generator=torch.Generator().manual_seed(i)) for i in block]
    return {"first": block.start, "values": torch.stack(rows)}


def main() -> int:
    ctx = init_distributed("cpu")
    token = broadcast(f"from rank {ctx.rank}", ctx)
    sums = all_reduce_sum([1.0, ctx.rank], ctx)
    run = run_units(index_blocks(23, 4), work, ctx, order=[5, 4, 3, 2, 1, 0])
    if ctx.is_main:
        Path(sys.argv[1]).write_text(json.dumps({
            "world_size": ctx.world_size, "backend": ctx.backend, "token": token, "sums": sums,
            "firsts": [r["first"] for r in run.results],
            "values": torch.cat([r["values"] for r in run.results]).tolist(),
            "ranks": run.ranks, "busy_s": run.busy_s}))
    shutdown(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
