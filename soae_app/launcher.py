"""`soae-lab`: start the app, the console-script twin of ``./lab app``.

The app (``app.py``, ``app_pages/``, ``.streamlit/config.toml``) lives in a checkout of SOAE Lab, not in
the wheel: the wheel carries the library, the bundled models and samples, and the CLIs. An editable
install (what ``./lab`` makes) finds the checkout next to this package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def checkout_root() -> Path:
    """The repository root this package was installed from (holds ``app.py``); ValueError if there is none."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "app.py").is_file() or not (root / "app_pages").is_dir():
        raise ValueError(f"soae-lab starts the app from a checkout of SOAE Lab, but {root} holds no app.py and "
                         "app_pages/: clone the repository and run `./lab app` there (or `pip install -e .` "
                         "in the clone, then `soae-lab`).")
    return root


def main(argv: list[str] | None = None) -> int:
    """Run ``streamlit run app.py [ARGS]`` from the checkout (its ``.streamlit/config.toml`` applies)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        root = checkout_root()
    except ValueError as error:
        print(f"soae-lab: {error}", file=sys.stderr)
        return 2
    os.chdir(root)
    streamlit = Path(sys.executable).with_name("streamlit")
    command = [str(streamlit), "run", "app.py", *args]
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
