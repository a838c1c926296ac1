"""The identity graph: typed identifiers, resolution of events to profiles, merges and their undo."""
