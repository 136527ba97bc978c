"""LungGAN: lung segmentation of chest CT (LGAN), the Slicer-free core.

Packaged by pipeline stage (``docs/ARCHITECTURE.md``): ``io``, ``models``, ``segment``, ``evaluate``,
``train`` and ``slicer``, with the ``lunggan`` command line (``cli``) on top.
"""

#: The package version (pyproject.toml reads it from here).
__version__ = "0.1.0"

from ._moved import install as _install_old_module_names  # noqa: E402

_install_old_module_names()  # the flat module names of 0.1.0 (LungGANLib.inference, ...) for one release
