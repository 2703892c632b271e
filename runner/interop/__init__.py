"""Interoperability: ptychodus products and diffraction files, the ptychodus reconstructor
library (``reconstructor``, the only module that imports ptychodus) and its launcher."""
