"""The sizes and timeouts of the transport kit (`srpc_core.testing.transports` re-exports them)."""

from __future__ import annotations

#: The kit server's max_message_bytes: small enough to make "near the limit" cheap.
LIMIT = 1 << 20
#: How far below LIMIT the kit's largest message stays, for the fields around its payload.
NEAR_LIMIT_MARGIN = 2048
#: Seconds any wait in the kit may take before it counts as a hang.
HANG = 10.0
#: How long a test waits for the server thread to return after `stop()`.
STOP_TIMEOUT = 20.0
#: The idle timeout the kit sets to check that a silent connection is dropped.
IDLE_TIMEOUT = 0.5
#: The drain timeout of a server whose shutdown must not wait for it (only idle peers are open).
LONG_DRAIN = 3 * HANG
#: How soon such a shutdown must return.
PROMPT = HANG / 2
RANDOM_SEED = 20240229

__all__ = [
    "HANG",
    "IDLE_TIMEOUT",
    "LIMIT",
    "LONG_DRAIN",
    "NEAR_LIMIT_MARGIN",
    "PROMPT",
    "RANDOM_SEED",
    "STOP_TIMEOUT",
]
