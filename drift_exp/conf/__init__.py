"""The Hydra config tree (YAML files, shipped as package data). This file makes the folder importable, which is
how Hydra finds the tree of an installed program (`pkg://drift_exp.conf`, the `drift-exp` console script)."""
