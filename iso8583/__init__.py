"""ISO 8583 codec, dialect specs, framing, BER-TLV and payment crypto.

Pure: bytes in, values out. No sockets, threads, files or clocks.
"""
