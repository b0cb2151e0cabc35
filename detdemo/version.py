"""The package version, in a leaf module so that anything (checkpoints, exports) can record it without cycles."""

__version__ = "0.1.0"
