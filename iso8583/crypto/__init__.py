"""Payment cryptography: MACs, PIN blocks, key check values, working keys, DUKPT, EMV cryptograms."""
