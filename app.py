"""SOAE Lab — the Streamlit entrypoint: page navigation and the shared sidebar.

Run with ``./lab app`` (or ``streamlit run app.py``). Pages live in ``pages/``; to add one, add a
line to ``PAGES`` under the step of the path (explore → inspect → evaluate) it belongs to.
"""

from pathlib import Path

import streamlit as st

from soae_app.sidebar import SELECTION_KEY, render_sidebar

ROOT = Path(__file__).resolve().parent

# (section, file in pages/, title, Material icon, URL path). Sections are shown in this order.
PAGES = [
    ("1 · Explore", "attack_lab.py", "Attack Lab", ":material/science:", "attack-lab"),
    ("2 · Inspect", "krylov_inspector.py", "Krylov Inspector", ":material/query_stats:", "krylov-inspector"),
]

st.set_page_config(page_title="SOAE Lab", page_icon=":material/biotech:", layout="wide")

sections: dict[str, list] = {}
for position, (section, file, title, icon, url_path) in enumerate(PAGES):
    sections.setdefault(section, []).append(
        st.Page(ROOT / "pages" / file, title=title, icon=icon, url_path=url_path, default=position == 0))
page = st.navigation(sections)

with st.sidebar:
    st.session_state[SELECTION_KEY] = render_sidebar()

page.run()
