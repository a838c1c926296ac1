"""Ingestion: validate canonical (Segment-spec) messages, resolve identity, commit, hand off."""
