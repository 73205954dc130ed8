"""Where the app server's own process spends its busy time, from a py-spy raw profile that
``bench_classroom.py --profile`` wrote (``bench/results/NAME_PAGE_pyspy.txt``).

The server's script threads share one GIL, so their Python time is what serialises a class;
the worker processes (nested ``process …`` frames) are counted apart, and idle frames (waits,
selects, sleeps) are left out. Prints the inclusive share of each function of the app, plotly,
Streamlit's elements, pandas, PIL and torch.nn:

    .venv/bin/python bench/spy_shares.py bench/results/classroom_profile_before_figures_pyspy.txt
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

IDLE = ("Condition.wait", "select (selectors", "_write_to_self", "sleep", "Event.wait")
SHOWN = ("app_pages/", "soae_app/", "soae_core/", "plotly", "streamlit/elements", "pandas", "PIL", "torch/nn",
         "pyarrow", "importlib")


def shares(raw: Path) -> tuple[collections.Counter, int, int, int]:
    """(inclusive samples per function of the server process, busy samples, idle samples, worker samples)."""
    inclusive, busy, idle, workers = collections.Counter(), 0, 0, 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        if len(frames) > 1 and frames[1].startswith("process "):
            workers += n
            continue
        if any(word in frames[-1] for word in IDLE):
            idle += n
            continue
        busy += n
        for frame in {re.sub(r":\d+\)", ")", f) for f in frames[1:]}:
            if any(word in frame for word in SHOWN):
                inclusive[frame] += n
    return inclusive, busy, idle, workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    inclusive, busy, idle, workers = shares(args.raw)
    print(f"server process: {busy} busy samples, {idle} idle; worker processes: {workers} samples")
    for frame, n in inclusive.most_common(args.top):
        print(f"{n / max(busy, 1):6.3f}  {frame[:140]}")


if __name__ == "__main__":
    main()
