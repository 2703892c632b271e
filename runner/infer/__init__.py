"""Reconstruction of a full object from predicted patches."""
