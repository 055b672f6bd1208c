"""sschsr: hyperspectral image super-resolution guided by an unaligned RGB photo (SSC-HSR)."""

__version__ = "0.1.0"
