"""Start ptychodus 1.7.0 with the ptycho-spec reconstructor library registered.

ptychodus builds its reconstructor libraries inside ``ptychodus.model.core.ModelCore.__init__``:
five hard-wired ``...ReconstructorLibrary(settings_registry, is_developer_mode_enabled)`` calls
whose results it hands to ``ProcessingCore``. It has no plugin hook or entry point for more
(``PluginRegistry`` loads file formats only). :func:`install` therefore rebinds the one name
``ProcessingCore`` in ``ptychodus.model.core`` to a subclass that appends
:class:`~ptycho_spec.commands.ptychodus_library.PtychoSpecReconstructorLibrary` to the libraries it is
given; every ``ModelCore`` built afterwards offers ``ptycho-spec_pinn`` and
``ptycho-spec_supervised``. Nothing else in ptychodus changes.

    ptycho-spec-ptychodus                       the ptychodus GUI
    ptycho-spec-ptychodus -b reconstruct -i IN -o OUT -s settings.ini
    python -m ptycho_spec.commands.ptychodus_launch ...   the same
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import ptychodus.model.core as core
from ptychodus.api.reconstruct import ReconstructorLibrary
from ptychodus.api.settings import SettingsRegistry

from ptycho_spec.commands.ptychodus_library import PtychoSpecReconstructorLibrary

_ORIGINAL = core.ProcessingCore


class ProcessingCoreWithPtychoSpec(_ORIGINAL):  # type: ignore[misc, valid-type]
    """ptychodus's ``ProcessingCore`` with the ptycho-spec library after the built-in ones."""

    def __init__(
        self,
        task_manager: Any,
        settings_registry: SettingsRegistry,
        product_api: Any,
        algorithm_libraries: Sequence[ReconstructorLibrary],
    ) -> None:
        library = PtychoSpecReconstructorLibrary(settings_registry)
        libraries = [*algorithm_libraries, library]
        super().__init__(task_manager, settings_registry, product_api, libraries)


def install() -> None:
    """Register the library with every ``ModelCore`` built from now on (idempotent)."""
    core.ProcessingCore = ProcessingCoreWithPtychoSpec


def main() -> int:
    """ptychodus's own ``main`` (GUI, or batch mode with ``-b``) with the library installed."""
    from ptychodus.__main__ import main as ptychodus_main

    install()
    return int(ptychodus_main())


if __name__ == "__main__":
    sys.exit(main())
