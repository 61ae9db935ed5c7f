"""Evaluation: scoring a saved run on a split or on other data."""
