"""The terminal core: flows, journal, rules and paper, with no Textual and no sockets.

Everything a cashier's keypress sets in motion between the screen and the money
moving lives here, behind small interfaces (:mod:`terminal.core.ports`) so tests
drive it against the acquirer host's rules in memory.
"""
