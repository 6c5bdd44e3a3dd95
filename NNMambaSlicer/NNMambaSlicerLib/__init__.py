"""GUI-free code of the NNMamba hub module, shared with the Segmentation and Landmarks modules.

Submodules import slicer, vtk, numpy and nnmamba only when a function runs, so that Slicer can list the modules
without paying for those imports (and so that tests run them against slicer-core without the application).
"""
