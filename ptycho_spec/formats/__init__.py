"""The file formats both halves read, each written once, torch-free.

* ``npz.py``: the PtychoPINN NPZ data contract — keys, layouts (including the legacy
  ``(N, N, M)`` diffraction stack), dtype kinds, shape rules, the values of measured patterns,
  and ``.npy`` headers read safely. The compiler applies the rules to headers
  (``ptycho_spec.facts``), the runner to the arrays it loads (``runner.data.npz``).
* ``bundle.py``: the ``model.bundle`` container — members, size limits, the manifest and its
  sha256 hashes, the embedded lock parsed once. The compiler and the runner read a bundle
  through the same function; only the runner turns its weights into tensors.
* ``ptychodus.py``: ptychodus product and diffraction files (h5py, no ptychodus import).
"""
