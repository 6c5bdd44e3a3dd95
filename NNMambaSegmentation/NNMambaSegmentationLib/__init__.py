"""GUI-free code of the NNMambaSegmentation module: results into Segmentation nodes (:mod:`.segments`, with edit
protection), box reads and writes of one segment (:mod:`.labelmaps`) and click-to-segment (:mod:`.clicks`).

Submodules import slicer, vtk, numpy and nnmamba only when a function runs, so Slicer lists the module without
paying for them, and tests run the code against slicer-core without the application.
"""
