"""Data: manifests, validation, splits, per-modality preprocessing, the cache, built-in sets."""
