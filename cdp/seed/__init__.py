"""Demo data for `cdp seed-demo`: Chinese vocabularies and a fast, seeded generator."""
