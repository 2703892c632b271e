"""ptycho-spec: declarative, reproducible PtychoPINN runs.

A versioned TOML run spec, a compiler that resolves it completely, and a lockfile that the
runner (package ``runner``) executes. Only the command layer (``ptycho_spec.commands``,
imported by ``cli.py`` when a command runs something) imports ``runner`` and torch.
"""

__version__ = "0.1.0"
