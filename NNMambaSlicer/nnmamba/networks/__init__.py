"""The nnMamba networks, re-implemented with the official parameter names (see ``nnmamba-spec.md``)."""

from .classification import CLS_VARIANTS, NNMambaEncoder
from .inference_prep import fold_batch_norms, prepare_for_inference
from .mamba import Mamba
from .mamba_layer import MambaLayer, MambaSeq
from .segmentation import SEG_VARIANTS, NNMambaSeg, check_spatial_size, nearest_valid_sizes

__all__ = ["CLS_VARIANTS", "SEG_VARIANTS", "Mamba", "MambaLayer", "MambaSeq", "NNMambaEncoder", "NNMambaSeg",
           "check_spatial_size", "fold_batch_norms", "nearest_valid_sizes", "prepare_for_inference"]
