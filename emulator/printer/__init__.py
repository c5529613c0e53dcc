"""Virtual ESC/POS receipt printer: decodes print jobs to the text a receipt would show."""

from emulator.printer.device import VirtualPrinter, render_file, status_byte
from emulator.printer.escpos import EscPosDecoder, render

__all__ = ["EscPosDecoder", "VirtualPrinter", "render", "render_file", "status_byte"]
