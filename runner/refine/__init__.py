"""The refinement stage: the PINN's stitched object fitted to every measured pattern."""
