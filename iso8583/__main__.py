"""``python -m iso8583`` runs the ``pos-iso`` tool."""

import sys

from iso8583.cli import main

sys.exit(main())
