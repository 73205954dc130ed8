"""Runs app.py for streamlit.testing's AppTest.

AppTest (Streamlit 1.67) re-creates its PagesManager on every run and, because the repository
has a ``pages/`` folder, falls back to the old pages-folder mode after the first run: it then runs
the page file alone, without the entrypoint, so the shared sidebar vanishes (NOTES.md). A script
in a folder without ``pages/`` avoids that; app.py builds its page paths from its own location.
"""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[1] / "app.py"), run_name="__main__")
