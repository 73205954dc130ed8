"""The Streamlit side of SOAE Lab: the shared sidebar, the caches and the plotly figures, and the
tools that start and drive the app (headless for tests, several replicas behind nginx).

Pages (``app_pages/``) stay thin: they lay out what these modules and ``soae_core`` compute.
"""
