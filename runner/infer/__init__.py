"""The inference stage: a trained network and a scan → the stitched, scored reconstruction.

Changes when how patches become an object changes: prediction and scoring
(``reconstruct.py``), position-aware stitching (``stitch.py``) and the per-patch gains that
align overlapping patches (``align.py``).
"""
