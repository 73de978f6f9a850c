"""renkei: whitelist-gated information linkage for public administration, on Temporal."""

__version__ = "0.1.0"
