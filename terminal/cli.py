"""``pos-terminal``: the cashier application's entry point (not built yet)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Say plainly that the cashier UI is still to come and what exists today."""
    del argv
    print("pos-terminal: the cashier application is not built yet.\n"
          "Today: the end-to-end demo (bash scripts/demo.sh, or python -m terminal.demo),\n"
          "the acquirer emulator (pos-emulator serve) and the developer tool\n"
          "(pos-iso decode|encode|mac|pinblock|kcv|signon-keys).",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
