"""Bundled modern backbones: pytorchvideo 3D CNNs and timm 2D image models applied per frame."""
