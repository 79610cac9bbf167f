"""The ``python -m srpc_core.tools.<tool>`` entry points (also mounted in the ``srpc`` CLI)."""

__all__: list[str] = []
