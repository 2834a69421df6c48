"""The data models of raw2logit (the image signal processing; Φ_Proc in the paper).

from raw2logit.isp import CameraParams, StaticPipeline, ParametrizedPipeline, STATIC_PIPELINE_NAMES
from raw2logit.isp import reference   # the numpy oracle (imported on first use)
"""

from raw2logit.isp.camera import PUBLISHED_CAMERAS, CameraParams, bayer_masks
from raw2logit.isp.parametrized import ParametrizedPipeline, static_theta
from raw2logit.isp.static import StaticPipeline, StaticPipelineBank
from raw2logit.isp.steps import STAGE_NAMES
from raw2logit.names import (
    BAYER_PATTERNS,
    STATIC_PIPELINE_NAMES,
    THETA_GROUPS,
    parse_pipeline_name,
    resolve_pipeline_names,
)

__all__ = [
    "BAYER_PATTERNS",
    "PUBLISHED_CAMERAS",
    "STAGE_NAMES",
    "STATIC_PIPELINE_NAMES",
    "THETA_GROUPS",
    "CameraParams",
    "ParametrizedPipeline",
    "StaticPipeline",
    "StaticPipelineBank",
    "bayer_masks",
    "parse_pipeline_name",
    "resolve_pipeline_names",
    "static_theta",
]
