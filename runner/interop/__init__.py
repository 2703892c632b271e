"""Interoperability: ptychodus products and diffraction files as scans, ``reconstruction.h5``,
and ``export-npz``. The ptychodus reconstructor library and its launcher are front ends that
compile specs, so they live in the command layer (``ptycho_spec.commands``)."""
