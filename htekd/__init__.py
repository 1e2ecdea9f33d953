"""htekd: a provisioning daemon for Htek IP phones."""

__version__ = "0.1.0"
