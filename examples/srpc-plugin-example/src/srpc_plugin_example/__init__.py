"""An example srpc plugin: the ``uds`` transport and the ``msgpack-example`` codec.

srpc finds both through the ``srpc`` entry points in this distribution's pyproject.toml; select
them in srpc.toml with ``transport = "uds"`` and ``codec = "msgpack-example"``.
"""

__version__ = "0.1.0"
