"""Everything the NNMambaLandmarks module does, without Qt: landmark results -> scene nodes, points <-> lines
links, export, and the background job. Importing it is cheap (numpy/vtk/nnmamba load when first used)."""

from .landmark_export import LandmarkExportError, export_csv, export_markups_json
from .landmark_links import LandmarkLinks
from .landmark_nodes import LandmarkNodes, find_landmark_nodes, follow_points, update_landmark_nodes
from .landmark_result import LandmarkResultError, LandmarkSet, parse_landmark_result

__all__ = [
    "LandmarkExportError",
    "LandmarkLinks",
    "LandmarkNodes",
    "LandmarkResultError",
    "LandmarkSet",
    "export_csv",
    "export_markups_json",
    "find_landmark_nodes",
    "follow_points",
    "parse_landmark_result",
    "update_landmark_nodes",
]
