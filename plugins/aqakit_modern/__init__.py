"""Bundled modern backbones: pytorchvideo 3D CNNs and timm 2D image models applied per frame.

pytorchvideo and timm are imported when a backbone is built, not when aqakit loads its plugins.
"""

from __future__ import annotations

import aqakit
from aqakit_modern.frame_nets import TSN
from aqakit_modern.inception_i3d import InceptionI3D
from aqakit_modern.pytorchvideo_nets import I3D, R2Plus1D, X3D, Slow, SlowFast

BACKBONES = {"i3d": I3D, "x3d": X3D, "r2plus1d": R2Plus1D, "slow": Slow, "slowfast": SlowFast, "tsn": TSN,
             "i3d_inception": InceptionI3D}


@aqakit.hookimpl
def register_backbones(register):
    for name, factory in BACKBONES.items():
        register(name, factory)
