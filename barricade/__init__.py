"""Barricade: an SMTP filtering proxy for mail gateways."""

__version__ = "0.1.0"
__all__ = ["__version__"]
