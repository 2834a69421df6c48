"""Demosaicing algorithms: Bayer mosaic (B, H, W) -> RGB (B, 3, H, W)."""

from raw2logit.isp.demosaic.bilinear import bilinear_kernels, demosaic_bilinear, demosaic_planes
from raw2logit.isp.demosaic.malvar2004 import demosaic_malvar2004
from raw2logit.isp.demosaic.menon2007 import demosaic_menon2007

DEMOSAIC_METHODS = {
    "bi": demosaic_bilinear,
    "ma": demosaic_malvar2004,
    "me": demosaic_menon2007,
}

__all__ = [
    "DEMOSAIC_METHODS",
    "bilinear_kernels",
    "demosaic_bilinear",
    "demosaic_malvar2004",
    "demosaic_menon2007",
    "demosaic_planes",
]
