"""The run stage: a lock and a run directory → every output, through the other stages.

Changes when what a run does, in what order, or what it writes changes: ``execute.py`` (the
runner's entry, ``execute(lock, paths=…, out_dir=…)``), ``prepare.py`` (the scans a run reads
or simulates, checked before the run directory is claimed), ``outputs.py`` (arrays, pictures,
metrics).
"""
