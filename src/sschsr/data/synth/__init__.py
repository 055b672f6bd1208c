"""Synthetic data: procedural hyperspectral scenes and unaligned reference views with exact flow.

- :func:`procedural_scene`: the embedded default dataset (any band count).
- :func:`make_pair` with :class:`SynthConfig`: the reference photo another camera would take from
  elsewhere, the forward flow from the source grid to it, and where that flow is valid.
- :mod:`.geometry` (depth, camera motion, z-buffered new views) and :mod:`.photometric` (camera change)
  for finer control.
"""

from sschsr.data.synth.geometry import GeometryConfig, View, random_view, synthesize_view
from sschsr.data.synth.pairs import SynthConfig, make_pair
from sschsr.data.synth.photometric import PhotometricConfig, camera_change
from sschsr.data.synth.scenes import procedural_scene

__all__ = [
    "GeometryConfig",
    "PhotometricConfig",
    "SynthConfig",
    "View",
    "camera_change",
    "make_pair",
    "procedural_scene",
    "random_view",
    "synthesize_view",
]
