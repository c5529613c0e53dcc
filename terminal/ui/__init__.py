"""The cashier's screen: a keypad-first Textual app over the terminal core.

Nothing here decides anything about money: every rule is the core's
(:mod:`terminal.core`), reached through :class:`terminal.ui.backend.Backend`.
All text comes from :mod:`terminal.ui.text`.
"""
