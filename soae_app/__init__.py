"""The Streamlit side of SOAE Lab: the shared sidebar, the caches and the plotly figures.

Pages (``app_pages/``) stay thin: they lay out what these modules and ``soae_core`` compute.
"""
