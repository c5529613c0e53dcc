"""``pos-terminal web``: the same cashier app served to a browser with textual-serve.

Each browser tab gets its own app process (``command``); the server listens on
loopback unless told otherwise, for training rooms and remote support.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence


def serve(command: Sequence[str], *, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Serve ``command`` (a cashier-app command line) on http://host:port until interrupted."""
    from textual_serve.server import Server

    title = "pos-refund 培训 TRAINING"
    print(f"pos-terminal web: serving the cashier app on http://{host}:{port}/ "
          "(Ctrl+C stops)", file=sys.stderr, flush=True)
    server = Server(shlex.join(command), host=host, port=port, title=title)
    server.serve()
    return 0
