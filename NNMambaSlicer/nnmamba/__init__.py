"""nnmamba: the nnMamba networks (ISBI 2025) with a fast CPU selective scan, for 3D Slicer and beyond."""

__version__ = "0.1.0"
