"""Data sources -> FeedbackRecords. One module per source; `drift_exp.data.load.load_records` picks one from
the config (a third data set: a reader module here, its format name in drift_exp.names.DATA_FORMATS, its reader in
load.READERS).

Record kinds: dsat, sat, seed (WildFeedback: judged replies and DSAT->SAT revisions) and pref
(UltraFeedback: a prompt with the data set's chosen and rejected completions).

This __init__ imports nothing heavy: drift_exp.records reads its JSON Lines files with `lines`, `stream` and
`guard` from here, so the package must not import records back (no import cycle).
"""

from drift_exp.data.sources import SAMPLE_DIR

__all__ = ["SAMPLE_DIR"]
