"""``python -m emulator``: the same as the ``pos-emulator`` command."""

from emulator.cli import run

if __name__ == "__main__":
    run()
