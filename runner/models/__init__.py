"""Generators (by name, ``registry.py``) and ``PtychoPINN``, the generator composed with physics."""
