"""Diffraction data in the PtychoPINN NPZ contract: reading, writing, simulation and grouping."""
