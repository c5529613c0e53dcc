"""Payment cryptography on `cryptography`.

MACs, PIN blocks, key check values, working keys, DUKPT and EMV cryptograms.
"""
