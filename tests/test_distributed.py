"""soae_core.distributed: one process and 2 torchrun ranks (gloo, CPU) give the same unit results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from soae_core.experiments import distributed as D

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "distributed_probe.py"


def run_probe(tmp_path: Path, nproc: int | None) -> dict:
    out = tmp_path / f"probe_{nproc}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for name in D.TORCHRUN_VARIABLES:
        env.pop(name, None)
    if nproc is None:
        command = [sys.executable, str(PROBE), str(out)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   str(PROBE), str(out)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_ranks_gather_the_same_results_as_one_process(tmp_path):
    one = run_probe(tmp_path, None)
    two = run_probe(tmp_path, 2)
    assert one["world_size"] == 1 and one["backend"] is None
    assert two["world_size"] == 2 and two["backend"] == "gloo"
    assert two["token"] == "from rank 0"  # rank 0's value reached rank 1
    assert two["sums"] == [2.0, 1.0] and one["sums"] == [1.0, 0.0]
    assert one["firsts"] == two["firsts"] == list(range(0, 23, 4))  # results in unit order
    assert one["values"] == two["values"]  # bit for bit
    assert set(two["ranks"]) == {0, 1}  # both ranks took units
    assert set(one["ranks"]) == {0}


def test_index_blocks_do_not_depend_on_ranks():
    assert D.index_blocks(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert D.index_blocks(0, 4) == []
    with pytest.raises(ValueError, match="block >= 1"):
        D.index_blocks(10, 0)


def test_one_process_context_without_torchrun(monkeypatch):
    for name in D.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    ctx = D.init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    run = D.run_units([3, 1, 2], lambda u: torch.tensor(u) * 2, ctx, order=[2, 0, 1])
    assert [int(r) for r in run.results] == [6, 2, 4] and run.ranks == [0, 0, 0]
    assert D.gather({"a": 1}, ctx) == [{"a": 1}] and D.broadcast(5, ctx) == 5
    with pytest.raises(ValueError, match="permutation"):
        D.run_units([1, 2], lambda u: u, ctx, order=[0, 0])


def test_backend_follows_the_device():
    assert D.backend_for(torch.device("cpu")) == "gloo"
    assert D.backend_for(torch.device("cuda", 1)) == "nccl"


def test_torchrun_command_is_unambiguous():
    command = D.torchrun_command("soae_core.evaluate", ["--n-images", "8"], 2)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    assert command[-3:] == ["soae_core.evaluate", "--n-images", "8"]


def test_epoch_batches_of_two_ranks_make_up_the_one_process_batches():
    one = D.DistContext()
    ranks = [D.DistContext(rank=r, world_size=2) for r in range(2)]
    single = D.epoch_batches(40, 8, seed=5, epoch=3, ctx=one)
    assert torch.equal(torch.cat(single), torch.randperm(40, generator=torch.Generator().manual_seed(8)))
    parts = [D.epoch_batches(40, 8, seed=5, epoch=3, ctx=c) for c in ranks]
    assert len(parts[0]) == len(parts[1]) == len(single) == 5
    for step, batch in enumerate(single):
        merged = torch.empty_like(batch)
        for ctx, part in zip(ranks, parts, strict=False):
            merged[D.rank_rows(ctx)] = part[step]  # rank r holds rows r, r+2, … of the global batch
        assert torch.equal(merged, batch)
    with pytest.raises(ValueError, match="divisible by the number of ranks"):
        D.epoch_batches(40, 9, seed=0, epoch=0, ctx=ranks[0])
