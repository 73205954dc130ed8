"""Training and evaluation as library code, behind the command lines ``python -m soae_core.train``,
``.evaluate``, ``.model_card``, ``.reproduction_tables`` and ``.make_samples`` (which only parse
arguments): training and its objectives, model cards, the evaluation grid and studies, their
reports, the paper's published numbers and our runs beside them, the machine description."""
