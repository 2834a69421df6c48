"""Drift controls: the synthetic shifts that ISP-driven drift is compared against."""
