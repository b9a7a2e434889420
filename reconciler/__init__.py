"""opencti-defender-reconciler: keep Microsoft Defender for Endpoint custom indicators equal
to what OpenCTI says they should be."""

__version__ = "0.1.0"
__all__ = ["__version__"]
