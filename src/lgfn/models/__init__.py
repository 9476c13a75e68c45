"""LGFN networks (pure nn.Modules, no framework code)."""

from .alignment import AlignmentStage, DCNv2Pack, DeformableAlignment
from .basicvsr import BasicVSR
from .bicubic import Bicubic
from .blocks import ResidualBlockNoBN, make_layer
from .dmdcu import DMDCU
from .feature_extraction import FeatureExtraction
from .global_fusion import GlobalFusion, GlobalFusionBlock, VideoShuffle, video_shuffle
from .lgfn import LGFN, LGFN_SMALL, Merge
from .local_fusion import LocalFusion, LocalFusionBlock
from .reconstruction import RCAB, ChannelAttention, Reconstruction, ResidualGroup, Upsample
from .spynet import SpyNet

__all__ = [
    "BasicVSR",
    "Bicubic",
    "LGFN",
    "LGFN_SMALL",
    "DMDCU",
    "RCAB",
    "AlignmentStage",
    "ChannelAttention",
    "DCNv2Pack",
    "DeformableAlignment",
    "FeatureExtraction",
    "GlobalFusion",
    "GlobalFusionBlock",
    "LocalFusion",
    "LocalFusionBlock",
    "Merge",
    "Reconstruction",
    "ResidualBlockNoBN",
    "ResidualGroup",
    "SpyNet",
    "Upsample",
    "VideoShuffle",
    "make_layer",
    "video_shuffle",
]
