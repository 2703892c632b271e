"""The PtychoPINN job: data, physics, generator, stitching, metrics, and the Lightning runner.

Only this package imports torch and lightning. It executes a lock (``ptycho_spec.lock.Lock``)
and reads nothing else: no spec, no environment, no default.
"""
