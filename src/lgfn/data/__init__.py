"""Data: clip discovery per layout, frame windows, datasets and the ``VSRDataModule``."""

from lgfn.data.datamodule import VSRDataModule
from lgfn.data.datasets import VSRTestDataset, VSRTrainDataset
from lgfn.data.io import read_image
from lgfn.data.layouts import Clip, ClipSet, discover_folder, discover_paired, discover_vimeo90k
from lgfn.protocol.windows import PADDINGS, frame_indices

__all__ = [
    "PADDINGS",
    "Clip",
    "ClipSet",
    "VSRDataModule",
    "VSRTestDataset",
    "VSRTrainDataset",
    "discover_folder",
    "discover_paired",
    "discover_vimeo90k",
    "frame_indices",
    "read_image",
]
