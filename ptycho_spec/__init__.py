"""ptycho-spec: declarative, reproducible PtychoPINN runs.

A versioned TOML run spec, a compiler that resolves it completely, and a lockfile that the
runner (package ``runner``) executes. This package never imports torch.
"""

__version__ = "0.1.0"
