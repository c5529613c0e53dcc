"""Acquirer host emulator and emulated hardware (virtual EMV cards, serial PIN pad, printer)."""
