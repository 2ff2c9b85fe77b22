"""Analyses of finished runs: high-reward coverage (paper §4.3, Figures 3-4).

``topography``: the pure math (grid, reward-weighted KDE surfaces, high-reward region, shares);
``embed``: response embeddings and the 2-D projection; ``plots``: the figures; ``coverage``: the
command line, ``python -m drift_exp.analysis.coverage RUN_DIR ...``.
"""
