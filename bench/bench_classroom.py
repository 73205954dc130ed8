"""A class on one server: N students through Streamlit's own websocket protocol.

Starts the real server from the checkout (``streamlit run app.py``, headless, a free port, the
shipped ``.streamlit/config.toml`` plus any ``--server-arg``), then drives sessions with
:mod:`soae_app.protocol` (a client costs almost nothing, so the server is what is measured):

- ``single``: one session per page, cold (an image nobody has asked for; imports and models
  already loaded by a warm-up session) and warm (the same run again: everything cached).
- ``burst``: N new sessions open the page at the same moment, each on its own image (cold),
  then, once every cold view is done, all rerun at once (warm). Burst efficiency = N × single cold ÷ (cores × burst wall):
  1.0 means the server served N students as fast as it would serve them one after another on
  every core; below 1, concurrency itself costs time.
- ``arrivals``: N students, each interacting (new page and new image) at seeded exponential
  intervals with mean N ÷ rate seconds (30 students × one interaction per 10 s = 3/s), for
  ``--duration`` seconds. A student whose previous run has not finished yet waits for it
  (a closed loop per student), so the reported seconds are server times.
- ``soak``: sessions open, load the Attack Lab on a random image and close, 10 at a time,
  until ``--soak`` sessions have run; the server's RSS after 300 and after the last one.
- ``heavy``: (admission control) half the students burst into the Attack Lab alone, then the
  other half while one student runs every attack on ``--heavy-n`` Compare images; p95 ratio.
- ``same``: (issue 17) N new sessions with the *same settings* on N different images, at once,
  on a model nobody has used yet (cold for every image). Run it again with ``SOAE_BATCHING=0`` in
  the environment (the server inherits it; the result records it as ``server_env``) for the
  batcher-off comparison.

Errors count ``exception`` elements and ``st.error`` alerts. Every number comes with the load
average before and after its phase (the machine is shared): compare ratios within one run. Each
phase also records the CPU seconds the server and its worker processes spent (``server_cpu_s``);
a burst's ``cpu_efficiency`` = N × one student's CPU seconds ÷ the burst's, which other jobs on
the machine barely move. Memory: the server's RSS, and the PSS of server + workers (shared
libraries counted once). ``--profile`` runs py-spy on the server and its workers during each
burst (``pip install py-spy`` into the venv) and stores the shares of the usual suspects.

Run: ``.venv/bin/python bench/bench_classroom.py [--students 30] [--scenarios single,burst,arrivals,soak]
[--burst-pages attack-lab,...] [--server-arg=--runner.postScriptGC=false] [--name classroom]``;
results go to bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import machine, write_result

from soae_app.headless import free_port, stop, wait_until_healthy
from soae_app.protocol import PageRun, Session, page_paths, run_sessions

ROOT = Path(__file__).resolve().parents[1]

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
PER_CLASS = 20
# Pages whose work depends on the sidebar's image (the others: on the bundled test set).
IMAGE_PAGES = ("attack-lab", "how-soae-works", "krylov-inspector", "perturbation-anatomy")
WARMUP_MODEL = "fmnist-cnn-std"
# {page URL path: the name a client requests it by} (the default page is requested as "").
PAGES = page_paths(ROOT / "app.py")


class ImagePool:
    """Hands out (class, example) pairs never handed out before: a cold image for the page."""

    def __init__(self, seed: int) -> None:
        self.pairs = [(c, e) for e in range(1, PER_CLASS + 1) for c in CLASSES]
        random.Random(seed).shuffle(self.pairs)

    def take(self) -> dict[str, str]:
        cls, ex = self.pairs.pop()
        return {"cls": cls, "ex": str(ex)}


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the worker pool's processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                found.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue
    return found


def memory_mb(pid: int) -> dict[str, float]:
    """The server's RSS, its children's RSS, and the proportional set size (PSS: shared pages
    such as torch's libraries counted once across the processes) of server + children, in MB."""
    def pss(p: int) -> float:
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
        return 0.0

    kids = children(pid)
    return {"server_rss": rss_mb(pid), "workers_rss": sum(rss_mb(k) for k in kids),
            "total_pss": pss(pid) + sum(pss(k) for k in kids), "workers": len(kids)}


SERVER_PID: list[int] = []  # the server under test (set when it starts)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of process ``pid`` with its live children (the worker processes),
    and of ``pid`` alone (one scan of /proc): less sensitive to other jobs than wall time."""
    tick = os.sysconf("SC_CLK_TCK")
    total = own = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if stat.parent.name == str(pid):
            total, own = total + seconds, own + seconds
        elif fields[1] == str(pid):  # fields[1]: the parent's pid
            total += seconds
    return total, own


def load() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def stats(runs: list[PageRun]) -> dict[str, Any]:
    """p50/p95/max seconds, errors and statuses of a set of runs."""
    seconds = sorted(r.seconds for r in runs)
    p95 = seconds[min(len(seconds) - 1, int(round(0.95 * (len(seconds) - 1))))] if seconds else float("nan")
    return {"n": len(runs), "p50_s": statistics.median(seconds) if seconds else float("nan"), "p95_s": p95,
            "max_s": max(seconds, default=float("nan")),
            "exceptions": sum(len(r.exceptions) for r in runs), "errors": sum(len(r.errors) for r in runs),
            "not_ok": sum(r.status != "ok" for r in runs),
            "examples": sorted({*(e for r in runs for e in r.exceptions), *(e for r in runs for e in r.errors)})[:3]}


def profile_summary(raw: Path, top: int = 12) -> dict[str, Any]:
    """Shares of py-spy samples (raw collapsed stacks): the functions most often on top of the
    stack, and how often some known suspects are anywhere on it."""
    leaf, inclusive, total = collections.Counter(), collections.Counter(), 0
    suspects = {"gc.collect after each run (runner.postScriptGC)": "_on_script_finished", "GMRES (krylov.gmres)": "gmres (", "Hessian-vector products": "hvp_",
                "model forward/backward": "_call_impl (torch", "plotly figures": "plotly", "pickle": "pickle",
                "streamlit serialisation": "marshall", "numpy → PNG (images)": "image_to_url"}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf[stack.split(";")[-1]] += n
        for name, needle in suspects.items():
            if needle in stack:
                inclusive[name] += n
    return {"samples": total, "top_self": [(frame, round(n / total, 3)) for frame, n in leaf.most_common(top)],
            "inclusive": {name: round(inclusive[name] / max(total, 1), 3) for name in suspects}}


def start_server(port: int, server_args: list[str], log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
               str(port), "--server.address", "127.0.0.1", *server_args]
    return subprocess.Popen(command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)


async def phase(label: str, body) -> dict[str, Any]:
    before, (cpu_before, own_before), clients_before = load(), cpu_seconds(SERVER_PID[0]), time.process_time()
    start = time.perf_counter()
    result = await body
    # server_process_cpu_s: the streamlit process alone (its script threads share one GIL);
    # clients_cpu_s: this benchmark's protocol clients, which run on the same cores
    cpu_after, own_after = cpu_seconds(SERVER_PID[0])
    result.update(load_before=before, load_after=load(), phase_wall_s=round(time.perf_counter() - start, 2),
                  server_cpu_s=round(cpu_after - cpu_before, 2), server_process_cpu_s=round(own_after - own_before, 2),
                  clients_cpu_s=round(time.process_time() - clients_before, 2))
    print(f"  {label}: {summary_line(result)}", flush=True)
    return result


def summary_line(result: dict[str, Any]) -> str:
    keys = ("p50_s", "p95_s", "max_s", "wall_s", "efficiency", "cpu_efficiency", "server_cpu_s",
            "server_process_cpu_s", "clients_cpu_s", "errors", "exceptions", "load_after")
    return " ".join(f"{k}={result[k]:.3g}" if isinstance(result[k], float) else f"{k}={result[k]}"
                    for k in keys if k in result)


async def single(base: str, page: str, query: dict[str, str]) -> dict[str, Any]:
    async with Session(base) as session:
        cold = await session.run(PAGES[page], query)
        warm = await session.run(PAGES[page], query)
    return {"cold_s": cold.seconds, "warm_s": warm.seconds, "cold": stats([cold]), "warm": stats([warm])}


def add_cpu_efficiency(burst_result: dict[str, Any], single_result: dict[str, Any], students: int) -> None:
    """CPU efficiency = N × the single session's server CPU seconds (cold + warm) ÷ the burst's
    (cold + warm): 1 means concurrency cost no extra CPU. Robust to other jobs on the machine."""
    if burst_result.get("server_cpu_s"):
        burst_result["cpu_efficiency"] = round(students * single_result["server_cpu_s"] / burst_result["server_cpu_s"], 3)


async def burst(base: str, page: str, queries: list[dict[str, str]], cores: int, single_cold_s: float
                ) -> dict[str, Any]:
    start = time.perf_counter()
    # in step: the warm reruns start once every cold view is done (until 2026-11-29 22:00 each session
    # reran as soon as its own cold view came, so early reruns competed with the last cold views)
    runs = await run_sessions(base, [[{"page": PAGES[page], "query": q}] * 2 for q in queries], in_step=True)
    cold = [r[0] for r in runs]
    warm = [r[1] for r in runs]
    cold_wall = max(r.seconds for r in cold)
    result = {"cold": stats(cold), "warm": stats(warm), "wall_s": round(time.perf_counter() - start, 2),
              "cold_wall_s": cold_wall,
              "efficiency": len(queries) * single_cold_s / (cores * cold_wall)}
    result.update({k: result["cold"][k] for k in ("p50_s", "p95_s", "max_s", "errors", "exceptions")})
    return result


async def heavy(base: str, images: list[dict[str, str]], n: int) -> dict[str, Any]:
    """Admission control: the Attack Lab burst on half the images alone, then on the other half
    while one student runs every attack on n Compare images (heavy jobs, queued)."""
    half = len(images) // 2
    without = await run_sessions(base, [[{"page": PAGES["attack-lab"], "query": q}] for q in images[:half]])
    async with Session(base) as keen_student:
        await keen_student.run(PAGES["compare-sweeps"])
        compare = asyncio.create_task(keen_student.run(PAGES["compare-sweeps"], widgets={
            "compare::n": str(n), "compare::attacks": ["FGSM", "PGD", "AutoAttack", "ASOD", "SOAE"]}))
        await asyncio.sleep(3.0)  # the run is under way
        during = await run_sessions(base, [[{"page": PAGES["attack-lab"], "query": q}] for q in images[half:]])
        compare_done = compare.done()
        compare_run = await compare
    off, on = stats([r[0] for r in without]), stats([r[0] for r in during])
    return {"without": off, "during": on, "ratio_p95": on["p95_s"] / off["p95_s"], "compare_n": n,
            "compare_s": compare_run.seconds, "compare_finished_before_burst_end": compare_done,
            "compare_errors": compare_run.errors + compare_run.exceptions,
            "p95_s": on["p95_s"], "errors": on["errors"], "exceptions": on["exceptions"]}


async def arrivals(base: str, pages: list[str], students: int, rate: float, duration: float, seed: int
                   ) -> dict[str, Any]:
    """Each student: a session that interacts at exponential intervals (mean students/rate s)."""
    rng = random.Random(seed)
    mean_gap = students / rate
    plans = []
    for _ in range(students):
        t, plan = rng.uniform(0, mean_gap), []
        while t < duration:
            plan.append((t, rng.choice(pages), {"cls": rng.choice(CLASSES), "ex": rng.randint(1, PER_CLASS)}))
            t += rng.expovariate(1 / mean_gap)
        plans.append(plan)
    start = time.perf_counter()
    runs: list[tuple[str, PageRun]] = []
    lags: list[float] = []

    async def student(plan):
        async with Session(base) as session:
            first = True
            for at, page, choice in plan:
                delay = start + at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    lags.append(-delay)
                if first:  # the link opens the page on that image
                    run = await session.run(PAGES[page], {"cls": choice["cls"], "ex": str(choice["ex"])})
                    first = False
                else:  # then the student clicks: another page, another example
                    run = await session.run(PAGES[page], {"cls": choice["cls"]}, widgets={"ex": choice["ex"]})
                runs.append((page, run))

    await asyncio.gather(*(student(plan) for plan in plans))
    per_page = {page: stats([r for p, r in runs if p == page]) for page in pages}
    result = {"overall": stats([r for _, r in runs]), "per_page": per_page, "interactions": len(runs),
              "rate_per_s": len(runs) / (time.perf_counter() - start), "late_starts": len(lags),
              "max_late_s": max(lags, default=0.0)}
    result.update({k: result["overall"][k] for k in ("p50_s", "p95_s", "max_s", "errors", "exceptions")})
    return result


async def soak(base: str, pid: int, sessions: int, seed: int, concurrency: int = 10) -> dict[str, Any]:
    rng = random.Random(seed)
    rss = {"0": rss_mb(pid)}
    memory = {"0": memory_mb(pid)}
    runs: list[PageRun] = []
    done = 0
    while done < sessions:
        group = min(concurrency, sessions - done)
        scripts = [[{"page": PAGES["attack-lab"], "query": {"cls": rng.choice(CLASSES), "ex": str(rng.randint(1, PER_CLASS))}}]
                   for _ in range(group)]
        runs += [r[0] for r in await run_sessions(base, scripts, start_together=False)]
        done += group
        if done % 100 == 0 or done == sessions:
            rss[str(done)] = rss_mb(pid)
            memory[str(done)] = memory_mb(pid)
            print(f"    soak {done} sessions: RSS {rss[str(done)]:.0f} MB; {memory[str(done)]}", flush=True)
    result = {"rss_mb": rss, "memory_mb": memory, "sessions": sessions, "runs": stats(runs)}
    if "300" in rss:
        result["growth_300_to_last_mb"] = rss[str(sessions)] - rss["300"]
    result.update({k: result["runs"][k] for k in ("p50_s", "p95_s", "errors", "exceptions")})
    return result


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    pages = list(PAGES)
    burst_pages = pages if args.burst_pages == "all" else args.burst_pages.split(",")
    scenarios = args.scenarios.split(",")
    cores = os.cpu_count() or 1
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = ROOT / "bench" / "results" / f"{args.name}_server.log"
    server = start_server(port, args.server_arg, log)
    SERVER_PID[:] = [server.pid]
    result: dict[str, Any] = {"students": args.students, "cores": cores, "server_args": args.server_arg,
                              # the server inherits this environment: SOAE_BATCHING=0 runs it without the batcher
                              "server_env": {k: v for k, v in os.environ.items() if k.startswith("SOAE_")},
                              "scenarios": scenarios, "machine": machine()}
    try:
        start = time.perf_counter()
        wait_until_healthy(base, server, timeout_s=180)
        result["rss_start_mb"] = rss_mb(server.pid)
        pool = ImagePool(args.seed)
        warm_image = pool.take()
        warmup = []
        async with Session(base) as session:  # imports, models, caches of the warm-up image only
            for page in pages:
                warmup.append(await session.run(PAGES[page], {"model": WARMUP_MODEL, **warm_image}))
        result["warmup"] = {"first_page_s": warmup[0].seconds, "since_start_s": time.perf_counter() - start,
                            "runs": stats(warmup)}
        result["rss_after_warmup_mb"] = rss_mb(server.pid)
        print(f"warm-up: first page {warmup[0].seconds:.1f} s; RSS {result['rss_after_warmup_mb']:.0f} MB", flush=True)

        cold_images = {page: [pool.take() for _ in range(1 + args.students)] for page in IMAGE_PAGES}
        if "single" in scenarios or "burst" in scenarios:
            result["single"] = {}
            for page in pages:
                query = cold_images[page].pop() if page in IMAGE_PAGES else {}
                result["single"][page] = await phase(f"single {page}", single(base, page, query))
        if "burst" in scenarios:
            result["burst"] = {}
            for page in burst_pages:
                spy = None
                if args.profile:  # py-spy on the server (and its workers) during this burst
                    raw = log.with_name(f"{args.name}_{page}_pyspy.txt")
                    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                                            str(server.pid), "--subprocesses", "--format", "raw", "--rate", "50",
                                            "--nonblocking", "--output", str(raw)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    await asyncio.sleep(1.0)
                queries = cold_images[page][:args.students] if page in IMAGE_PAGES else [{}] * args.students
                cold_s = result["single"][page]["cold_s"]
                result["burst"][page] = await phase(f"burst {page}", burst(base, page, queries, cores, cold_s))
                add_cpu_efficiency(result["burst"][page], result["single"][page], args.students)
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(timeout=60)
                    result["burst"][page]["profile"] = profile_summary(raw)
                    print(f"    profile: {result['burst'][page]['profile']}", flush=True)
        if "same" in scenarios:
            model = args.same_model
            same_pool = ImagePool(args.seed + 1)
            queries = [{"model": model, **q} for q in [same_pool.take() for _ in range(args.students)]]
            async with Session(base) as session:
                alone = await session.run(PAGES["attack-lab"], {"model": model, **same_pool.take()})
            result["same"] = await phase("same settings", burst(base, "attack-lab", queries, cores, alone.seconds))
            result["same"]["single_cold_s"] = alone.seconds
        if "heavy" in scenarios:
            result["heavy"] = await phase("heavy", heavy(base, [pool.take() for _ in range(args.students)],
                                                        args.heavy_n))
        if "arrivals" in scenarios:
            result["arrivals"] = await phase("arrivals", arrivals(base, pages, args.students, args.rate, args.duration,
                                                                  args.seed))
        if "soak" in scenarios:
            result["soak"] = await phase("soak", soak(base, server.pid, args.soak, args.seed))
        result["rss_end_mb"] = rss_mb(server.pid)
        result["memory_end_mb"] = memory_mb(server.pid)
    finally:
        stop(server)
    return result


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table: one line per (phase, page)."""
    lines = [f"{'phase':<10} {'page':<22} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'eff.':>5} {'cpu-e':>5} {'err':>4} "
             f"{'load':>5}"]

    def row(phase: str, page: str, s: dict[str, Any], efficiency: float | None = None, load_after=None,
            cpu_efficiency: float | None = None) -> None:
        eff = f"{efficiency:5.2f}" if efficiency is not None else "    -"
        eff += f" {cpu_efficiency:5.2f}" if cpu_efficiency is not None else "     -"
        lines.append(f"{phase:<10} {page:<22} {s['p50_s']:7.2f} {s['p95_s']:7.2f} {s['max_s']:7.2f} {eff} "
                     f"{s['errors'] + s['exceptions'] + s['not_ok']:4d} {load_after if load_after is not None else '':>5}")

    for page, r in result.get("single", {}).items():
        row("cold", page, r["cold"], load_after=r["load_after"])
        row("warm", page, r["warm"], load_after=r["load_after"])
    for page, r in result.get("burst", {}).items():
        row("burst", page, r["cold"], r["efficiency"], r["load_after"], r.get("cpu_efficiency"))
        row("burst-wm", page, r["warm"], load_after=r["load_after"])
    if "same" in result:
        row("same", "attack-lab", result["same"]["cold"], result["same"]["efficiency"], result["same"]["load_after"])
    if "heavy" in result:
        row("alone", "attack-lab", result["heavy"]["without"], load_after=result["heavy"]["load_after"])
        row("+compare", "attack-lab", result["heavy"]["during"], load_after=result["heavy"]["load_after"])
    if "arrivals" in result:
        for page, s in result["arrivals"]["per_page"].items():
            row("arrivals", page, s, load_after=result["arrivals"]["load_after"])
        row("arrivals", "(all)", result["arrivals"]["overall"], load_after=result["arrivals"]["load_after"])
    if "soak" in result:
        lines.append(f"soak: RSS MB {result['soak']['rss_mb']}")
    lines.append(f"RSS: start {result.get('rss_start_mb', 0):.0f} MB, after warm-up "
                 f"{result.get('rss_after_warmup_mb', 0):.0f} MB, end {result.get('rss_end_mb', 0):.0f} MB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--scenarios", default="single,burst,arrivals,soak")
    parser.add_argument("--burst-pages", default="attack-lab")
    parser.add_argument("--rate", type=float, default=3.0, help="interactions per second in all (arrivals)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of arrivals")
    parser.add_argument("--soak", type=int, default=500, help="sessions in the soak phase")
    parser.add_argument("--same-model", default="fmnist-cnn-trades", help="model of the 'same' scenario (cold)")
    parser.add_argument("--heavy-n", type=int, default=200, help="Compare images of the 'heavy' scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `streamlit run` option, e.g. --server-arg=--runner.postScriptGC=false")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the server during each burst (needs py-spy in the venv); shares in the JSON")
    parser.add_argument("--name", default="classroom")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print(table(result))
    path = write_result(args.name, result)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
