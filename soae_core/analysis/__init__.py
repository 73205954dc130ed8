"""What each page of the app computes, one module per page (no Streamlit here, so every page's
numbers are tested without a browser): ``attack_lab``, ``how_soae_works``, ``krylov_inspector``,
``perturbation_anatomy``, ``compare_sweeps``, ``models``; shared by them: ``settings`` (the
sidebar's attack settings), ``common`` (one-image checks) and ``jobs`` (attacks on many images
in cacheable units)."""
