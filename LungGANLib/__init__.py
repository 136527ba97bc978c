"""LungGAN: lung segmentation of chest CT (LGAN), the Slicer-free core."""

#: The package version (pyproject.toml reads it from here).
__version__ = "0.1.0"
