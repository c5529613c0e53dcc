"""Hardware edge: PC/SC readers, serial PIN pads/readers/printers and the EMV card dialogue."""
