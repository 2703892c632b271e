"""The PtychoPINN runner: it executes a lock (``ptycho_spec.lock.Lock``) and reads nothing else:
no spec, no environment, no default. Its entry is ``runner.run.execute.execute(lock,
paths=…, out_dir=…)``, ``paths`` being the lock's data files where the command layer found
them (``ptycho_spec.locate``).

Laid out by stage, each folder with one reason to change: ``run/`` (the order of a run and what
it writes) calls ``train/``, ``infer/`` and ``refine/``, which build on the numerical core
(``data/``, ``physics/``, ``models/``, ``metrics.py``) and on ``rundir.py`` (the run
directory's layout and claim). ``interop/`` converts ptychodus files. Only this package and
the command layer (``ptycho_spec.commands``) import torch and lightning.
"""
