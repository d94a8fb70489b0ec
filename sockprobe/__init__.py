"""sockprobe: small, real experiments against the local kernel's socket layer."""

__version__ = "0.1.0"
