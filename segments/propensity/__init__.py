"""Propensity models: point-in-time features, training, a versioned registry and scoring.

The Python API lives in the submodules (this package imports none of them, so the segment
condition over scores can import the tables without pulling training in):

- ``features.compute_features(cutoff, kind)``: one row per eligible profile, events strictly
  before the cutoff only;
- ``labels``: the target (event name plus property filters) and who did it in a window;
- ``training.train(spec)``: fit and evaluate without writing anything;
- ``registry``: versions with their metrics and checksummed artifacts, the active one;
- ``scoring``: score every eligible profile, store score, rank and decile;
- ``service``: the same operations for a user (permission, audit, jobs): what the CLI,
  the API and the UI call.
"""
