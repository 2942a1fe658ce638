"""Reading user data into arrays in the model's layout and value range.

``load_dataset(source, expect)`` reads an ``.npz``, one image file (PNG, JPEG, BMP, TIFF,
NIfTI, MHA/MHD, NRRD, DICOM), a DICOM series folder, a folder of class subfolders or a flat
folder, or a CSV manifest (``path,label`` or ``image,mask``) with SimpleITK, and returns a
:class:`Dataset` whose ``x`` is in the layout, dtype and value range of :class:`InputExpectation`
(with ``stream=True``, as runs load, a :class:`SampleArray` read per block).
"""

from advonnx.data.dataset import LAYOUTS, Dataset, InputExpectation
from advonnx.data.intensity import INTENSITY_RULES, map_intensity, parse_intensity_rule
from advonnx.data.load import load_dataset, resample
from advonnx.data.stream import SampleArray

__all__ = [
    "INTENSITY_RULES",
    "LAYOUTS",
    "Dataset",
    "InputExpectation",
    "SampleArray",
    "load_dataset",
    "map_intensity",
    "parse_intensity_rule",
    "resample",
]
