"""SOAE Lab — the Streamlit entrypoint: page navigation and the shared sidebar.

Run with ``./lab app`` (or ``streamlit run app.py``). Pages live in ``app_pages/``; to add one, add
a line to ``PAGES`` under the step of the path (explore → inspect → evaluate) it belongs to.

Why not ``pages/``: Streamlit 1.67 still treats a ``pages/`` folder as the legacy multipage mode
until the first ``st.navigation`` call of the process, so the first deep link after a server start
(e.g. ``/krylov-inspector?…``) answered "Page not found", and ``AppTest`` ran page files without
this entrypoint (no sidebar) after its first run.
"""

from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent

# (section, file in app_pages/, title, Material icon, URL path). Sections are shown in this order;
# the first page is the default one, served at "/".
PAGES = [
    ("1 · Explore", "attack_lab.py", "Attack Lab", ":material/science:", "attack-lab"),
    ("1 · Explore", "how_soae_works.py", "How SOAE works", ":material/school:", "how-soae-works"),
    ("1 · Explore", "target_grid.py", "Source × target grid", ":material/grid_on:", "target-grid"),
    ("2 · Inspect", "krylov_inspector.py", "Krylov Inspector", ":material/query_stats:", "krylov-inspector"),
    ("2 · Inspect", "perturbation_anatomy.py", "Perturbation Anatomy", ":material/grain:", "perturbation-anatomy"),
    ("3 · Evaluate", "compare_sweeps.py", "Compare & Sweeps", ":material/leaderboard:", "compare-sweeps"),
    ("3 · Evaluate", "models.py", "Models", ":material/model_training:", "models"),
]

st.set_page_config(page_title="SOAE Lab", page_icon=":material/biotech:", layout="wide")

sections: dict[str, list] = {}
for position, (section, file, title, icon, url_path) in enumerate(PAGES):
    sections.setdefault(section, []).append(
        st.Page(ROOT / "app_pages" / file, title=title, icon=icon, url_path=url_path, default=position == 0))
page = st.navigation(sections)

# Imported after the navigation is drawn: importing torch and friends takes seconds on a cold
# start, and the browser shows the app's frame meanwhile instead of a blank page.
import os  # noqa: E402

import torch  # noqa: E402

from soae_app.sidebar import SELECTION_KEY, render_sidebar  # noqa: E402

# One intra-op thread per computation: every browser tab is a thread of this one process, so
# parallelism comes from sessions, and on the 2-core machine two torch threads per computation
# were 5-10x slower under load (measured: 100-image Compare run 37 s with 2 threads, 7 s with 1).
# SOAE_TORCH_THREADS overrides it (e.g. a single-user workstation with many idle cores).
torch.set_num_threads(int(os.environ.get("SOAE_TORCH_THREADS", "1")))

with st.sidebar:
    st.session_state[SELECTION_KEY] = render_sidebar()

page.run()
