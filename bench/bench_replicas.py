"""A 30-student burst through ``./lab serve``: K replicas behind nginx versus one, in one run.

For each K of ``--rounds`` (default 1,2,2,1: the order balances a drift of the shared machine's
load), start ``python -m soae_app.replicas --replicas K`` (nginx in front, also for K = 1, so the
proxy is in both), warm every replica up (a session pinned to it by the affinity cookie opens the
Attack Lab on a warm-up image: imports, models), time one cold Attack Lab alone, then the burst:
``--students`` new sessions open the Attack Lab at the same moment, each on its own image (the same
images in every round, and cold in every round, since every round starts fresh replicas), then all
rerun it (warm). The sessions carry no cookie, so nginx spreads their websockets at random like new
browsers; each session records where it landed. Load average before and after every phase (the
machine is shared: compare the rounds of one run, not runs of different days).

The classroom benchmark (``bench/bench_classroom.py``, branch ``classroom``) defines the same burst
on one server; this one drives it through the proxy with the client of
``soae_app/protocol.py``, sending the affinity cookie.

Run: ``.venv/bin/python bench/bench_replicas.py [--students 30] [--rounds 1,2,2,1]
[--server-arg=--runner.postScriptGC=false]``; results go to bench/results/replicas.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import machine, write_result

from soae_app.protocol import PageRun, Session, first_visit
from soae_app.replicas import spawn

ROOT = Path(__file__).resolve().parents[1]

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
EXAMPLES_PER_CLASS = 20
PAGE = ""  # the Attack Lab, the default page


def images(seed: int) -> list[dict[str, str]]:
    """Every (class, example) of the bundled samples as URL queries, in a seeded order."""
    pairs = [{"cls": c, "ex": str(e)} for e in range(1, EXAMPLES_PER_CLASS + 1) for c in CLASSES]
    random.Random(seed).shuffle(pairs)
    return pairs


def load() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stats(runs: list[PageRun]) -> dict[str, Any]:
    """p50/p95/max seconds of the runs and how many were not clean."""
    seconds = sorted(r.seconds for r in runs)
    return {"n": len(runs), "p50_s": statistics.median(seconds),
            "p95_s": seconds[min(len(seconds) - 1, round(0.95 * (len(seconds) - 1)))], "max_s": seconds[-1],
            "not_clean": sum(not r.clean for r in runs),
            "examples": sorted({*(e for r in runs for e in r.exceptions + r.errors)})[:3]}


def cookie_for_each_replica(url: str, addresses: list[str], tries: int = 200) -> dict[str, str]:
    """{replica address: an affinity cookie that lands on it}, from first visits."""
    cookies: dict[str, str] = {}
    for _ in range(tries):
        cookie, replica = first_visit(url)
        cookies.setdefault(replica, cookie)
        if set(cookies) >= set(addresses):
            return cookies
    raise RuntimeError(f"no cookie for some replica after {tries} visits: {cookies}")


async def burst(url: str, queries: list[dict[str, str]]) -> dict[str, Any]:
    """Every query's session opens at once and runs the page cold, then again (warm)."""
    sessions = [Session(url) for _ in queries]
    await asyncio.gather(*(s.open() for s in sessions))

    async def student(session: Session, query: dict[str, str]) -> tuple[PageRun, PageRun]:
        return await session.run(PAGE, query), await session.run(PAGE, query)

    before, start = load(), time.perf_counter()
    runs = await asyncio.gather(*(student(s, q) for s, q in zip(sessions, queries, strict=True)))
    result = {"cold": stats([cold for cold, _ in runs]), "warm": stats([warm for _, warm in runs]),
              "wall_s": time.perf_counter() - start, "load_before": before, "load_after": load(),
              "sessions_per_replica": dict(Counter(s.replica for s in sessions))}
    await asyncio.gather(*(s.close() for s in sessions))
    return result


async def one_round(count: int, students: int, seed: int, server_args: list[str]) -> dict[str, Any]:
    """Start K replicas, warm them up, time one cold run alone and the burst; returns the numbers."""
    start = time.perf_counter()
    deployment = spawn(count, Path(tempfile.mkdtemp(prefix=f"bench-replicas-{count}-")), server_args)
    try:
        result: dict[str, Any] = {"replicas": count, "ready_s": round(time.perf_counter() - start, 2)}
        addresses = [r["address"] for r in deployment.replicas]
        queries = images(seed)
        warm_up = queries[students + 1:]  # images nobody in the burst uses

        async def warm(cookie: str, query: dict[str, str]) -> None:
            async with Session(deployment.url, cookie=cookie) as session:
                run = await session.run(PAGE, query)
                if not run.clean:
                    raise RuntimeError(f"warm-up failed: {run}")

        cookies = cookie_for_each_replica(deployment.url, addresses)
        await asyncio.gather(*(warm(c, q) for c, q in zip(cookies.values(), warm_up, strict=False)))
        async with Session(deployment.url) as session:
            alone = await session.run(PAGE, queries[students])
        result["single_cold_s"] = alone.seconds
        result["burst"] = await burst(deployment.url, queries[:students])
        result["rss_mb_per_replica"] = [round(rss_mb(r["pid"])) for r in deployment.replicas]
        b = result["burst"]
        print(f"  K={count}: single cold {alone.seconds:.2f} s; burst cold p50 {b['cold']['p50_s']:.1f} s, "
              f"p95 {b['cold']['p95_s']:.1f} s, warm p95 {b['warm']['p95_s']:.2f} s, not clean "
              f"{b['cold']['not_clean'] + b['warm']['not_clean']}, load {b['load_before']} -> {b['load_after']}, "
              f"sessions per replica {sorted(b['sessions_per_replica'].values())}, "
              f"RSS MB {result['rss_mb_per_replica']}", flush=True)
        return result
    finally:
        deployment.stop()


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per K, medians over its rounds: burst cold p50/p95/max, warm p95, burst wall; not-clean runs in all."""
    out: dict[str, Any] = {}
    for count in sorted({r["replicas"] for r in rounds}):
        mine = [r["burst"] for r in rounds if r["replicas"] == count]
        out[str(count)] = {key: statistics.median(b["cold"][key] for b in mine) for key in ("p50_s", "p95_s", "max_s")}
        out[str(count)]["warm_p95_s"] = statistics.median(b["warm"]["p95_s"] for b in mine)
        out[str(count)]["wall_s"] = statistics.median(b["wall_s"] for b in mine)
        out[str(count)]["not_clean"] = sum(b["cold"]["not_clean"] + b["warm"]["not_clean"] for b in mine)
        out[str(count)]["rounds"] = len(mine)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--rounds", default="1,2,2,1", help="replica counts, one round each, in this order")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `streamlit run` option for every replica, "
                             "e.g. --server-arg=--runner.postScriptGC=false")
    parser.add_argument("--name", default="replicas")
    args, _ = parser.parse_known_args()
    if not 1 <= args.students < len(CLASSES) * EXAMPLES_PER_CLASS - 2:
        parser.error(f"--students must be in 1..{len(CLASSES) * EXAMPLES_PER_CLASS - 3}; got {args.students}")
    print(machine(), flush=True)
    rounds = []
    for count in (int(k) for k in args.rounds.split(",")):
        print(f"round: {count} replica(s), load {load()}", flush=True)
        rounds.append(asyncio.run(one_round(count, args.students, args.seed, args.server_arg)))
    result = {"students": args.students, "page": "attack-lab", "cores": os.cpu_count(), "server_args": args.server_arg,
              "rounds": rounds, "summary": summary(rounds)}
    print(f"{'K':>2} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'warm p95':>8} {'wall s':>7} {'not clean':>9}"
          "   (burst: cold, then warm; medians over rounds)")
    for count, s in result["summary"].items():
        print(f"{count:>2} {s['p50_s']:7.2f} {s['p95_s']:7.2f} {s['max_s']:7.2f} {s['warm_p95_s']:8.2f} "
              f"{s['wall_s']:7.2f} {s['not_clean']:9d}")
    print(f"written to {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
