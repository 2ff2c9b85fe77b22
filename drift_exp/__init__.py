"""drift_exp: DRIFT, SPIN and Iterative DPO on one pipeline (Hydra + TRL + W&B)."""

__version__ = "0.1.0"
