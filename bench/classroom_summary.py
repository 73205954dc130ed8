"""The classroom runs side by side: one line per result file of ``bench_classroom.py`` given on the
command line (cold burst and same-settings p95, burst efficiency, the server process's CPU), and
how many runs meet each target (30 cold at once: p95 ≤ 5 s, efficiency ≥ 0.8; same settings:
p95 ≤ 2.5 s). The counts quoted in the README come from here.

Run: ``python bench/classroom_summary.py bench/results/classroom_session5*.json …``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TARGETS = {"burst p95 ≤ 5 s": ("burst", "p95_s", 5.0, "max"), "burst efficiency ≥ 0.8": ("burst", "efficiency", 0.8, "min"),
           "same-settings p95 ≤ 2.5 s": ("same", "p95_s", 2.5, "max")}


def phase(result: dict, name: str) -> dict | None:
    return result["burst"].get("attack-lab") if name == "burst" and "burst" in result else result.get(name)


def main(paths: list[str]) -> None:
    met = dict.fromkeys(TARGETS, 0)
    counted = dict.fromkeys(TARGETS, 0)
    for path in paths:
        result = json.loads(Path(path).read_text())
        burst, same = phase(result, "burst"), phase(result, "same")
        cells = [f"{Path(path).stem:<34}"]
        cells.append(f"burst p95 {burst['p95_s']:.2f} s eff {burst['efficiency']:.2f}" if burst else f"{'':<27}")
        cells.append(f"same p95 {same['p95_s']:.2f} s" if same else "")
        print("  ".join(cells))
        for label, (name, key, bound, kind) in TARGETS.items():
            if (values := phase(result, name)) is not None and "nobatch" not in path:
                counted[label] += 1
                met[label] += values[key] <= bound if kind == "max" else values[key] >= bound
    for label in TARGETS:
        print(f"{label}: met in {met[label]} of {counted[label]} runs (batcher-off runs not counted)")


if __name__ == "__main__":
    main(sys.argv[1:])
