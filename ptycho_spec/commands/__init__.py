"""The command layer: the only code that sees both the compiler (``ptycho_spec``) and the runner
(``runner``).

``ptycho_spec/cli.py`` and ``ptycho_spec/compat_cli.py`` parse command lines and run the
compiler's own commands; what runs something lives here and imports ``runner`` when it runs:

* ``run.py``: ``run``, ``resume`` and ``export-npz`` — a spec compiled now or a lock verified
  against its data (found by ``ptycho_spec.locate``) and this machine (reading the
  environment), then ``runner.run.execute.execute(lock, paths=…, out_dir=…)``;
* ``ptychodus_library.py``: the ptychodus reconstructor library (with its launcher, the only
  modules that import ptychodus), which writes and compiles a spec for ptychodus's data and
  executes its lock;
* ``ptychodus_launch.py``: the ``ptycho-spec-ptychodus`` launcher.

The runner takes a lock and nothing else; the compiler's modules never import ``runner``
(``tests/test_imports.py``).
"""
