"""The vase dashboard: ``vase dashboard`` (or ``streamlit run dashboard/app.py``).

Pages: Compare (methods x budgets x tasks, the paper's figures), Sample (one output, its loop and
its agreement with the full cache), Cache explorer (what the KV cache kept, step by step) and
Jobs (progress, and a form that submits a job through the API). Data comes from
:mod:`dashboard.data` only; the database is ``VASE_DATABASE_URL`` (default: the embedded SQLite
file) and the API ``VASE_API_URL``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:  # run as a script by Streamlit: make the repository (or site-packages) importable
    import dashboard  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(HERE.parent))

import streamlit as st  # noqa: E402

from dashboard import ui  # noqa: E402

st.set_page_config(page_title="vase · KV-cache eviction", page_icon="🗜️", layout="wide")

# The pages live in views/, not pages/: Streamlit treats a pages/ folder beside the main script as a
# legacy multipage app and then ignores st.navigation.
PAGES = [
    st.Page(
        str(HERE / "views" / "compare.py"),
        title="Compare",
        icon=":material/leaderboard:",
        url_path="compare",
        default=True,
    ),
    st.Page(str(HERE / "views" / "sample.py"), title="Sample", icon=":material/article:", url_path="sample"),
    st.Page(
        str(HERE / "views" / "explorer.py"), title="Cache explorer", icon=":material/grid_on:", url_path="explorer"
    ),
    st.Page(str(HERE / "views" / "jobs.py"), title="Jobs", icon=":material/pending_actions:", url_path="jobs"),
]

page = st.navigation(PAGES)
with ui.guard("the sidebar"):
    ui.sidebar()
page.run()
