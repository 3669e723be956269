"""``proteinflow bench``: train (or load) backbone models on one budget, sample, evaluate and compare them.

- :mod:`proteinflow.bench.run`: the benchmark (settings, training/loading, sampling, evaluation, the
  quality-versus-NFE curve);
- :mod:`proteinflow.bench.report`: ``report.md``, ``bench.json`` and the PNG plots;
- the ``proteinflow bench`` command line lives in :mod:`proteinflow.cli.bench`.

Nothing is imported here, so that ``proteinflow --help`` stays fast.
"""
