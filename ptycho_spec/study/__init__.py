"""Studies: sweeps over run specs, every point compiled to its own lock before any runs.

``spec.py`` reads and checks a study file, ``compile.py`` expands it into points and compiles
each, ``lock.py`` holds the study directory's layout and ``study.lock.toml``, ``summary.py``
turns the points' results into tables and a picture. Running the points (launchers) and reading
run directories is the command layer's (``ptycho_spec.commands.launch``, ``.results``,
``.study``). No module here imports torch or the runner.
"""
