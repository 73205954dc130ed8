"""Plotly figures, one module per page of the app (``common``: what they share). Pure functions of
what :mod:`soae_core.analysis` computed: no Streamlit, no numerics."""
