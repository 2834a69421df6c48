"""raw2logit: dataset drift controls from raw sensor data through differentiable data models."""

__version__ = "0.1.0"
