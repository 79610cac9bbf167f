"""srpc's built-in plugins, one module each, registered through the ``srpc`` entry points."""

__all__: list[str] = []
