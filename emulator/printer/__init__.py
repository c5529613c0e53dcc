"""Virtual ESC/POS receipt printer: decodes print jobs to the text a receipt would show."""

from emulator.printer.escpos import EscPosDecoder, render

__all__ = ["EscPosDecoder", "render"]
