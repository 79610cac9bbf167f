"""srpc's version (one place: the package, the plugin listing and pyproject read it)."""

__version__ = "0.2.0"

__all__ = ["__version__"]
