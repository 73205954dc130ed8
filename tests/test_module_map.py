"""The README's module map names every module of the package and the app once, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def mapped_modules() -> list[str]:
    """Paths in the first column of the module map; ``a/b.py``, ``c.py`` means a/b.py and a/c.py."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| module | what it holds |"):].split("\n\n", 1)[0]
    paths = []
    for row in table.splitlines()[2:]:
        first = row.split(" | ")[0].lstrip("| ")
        folder = ""
        for name in re.findall(r"`([^`]+)`", first):
            folder = name.rsplit("/", 1)[0] + "/" if "/" in name else folder
            paths.append(name if "/" in name else folder + name)
    return paths


def test_module_map_matches_the_tree():
    tree = sorted(str(p.relative_to(REPO)) for folder in ("soae_core", "soae_app", "app_pages")
                  for p in (REPO / folder).rglob("*.py")) + ["app.py"]
    mapped = mapped_modules()
    assert len(mapped) == len(set(mapped)), "a module is listed twice"
    assert sorted(mapped) == sorted(tree)
