"""``python -m srpc_core`` is the ``srpc`` command."""

import sys

from srpc_core.cli import main

sys.exit(main())
