"""The MAC of a whole message (F64, or F128 after a secondary bitmap) in a dialect's scheme.

CUP POS MAC (DESIGN.md section 4) or ANSI X9.19 retail MAC, as the dialect's
``settings.mac`` says. Terminal and host both MAC and verify with these
functions, so the two sides cannot drift apart.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from iso8583.crypto import mac
from iso8583.dialect import Dialect
from iso8583.errors import Iso8583Error
from iso8583.message import Message


def uses_x919(dialect: Dialect) -> bool:
    """True when the dialect MACs with ANSI X9.19 instead of the CUP POS MAC."""
    return dialect.settings.mac == "x919"


def _mac_over(dialect: Dialect, mak: bytes, block: bytes) -> bytes:
    if uses_x919(dialect):
        # X9.19 wants a double-length key; a single-length MAK degrades to K||K
        return mac.x919_mac(mak if len(mak) == 16 else mak + mak, block)
    return mac.cup_pos_mac(mak, block)


def mac_function(dialect: Dialect, mak: bytes) -> Callable[[bytes], bytes]:
    """The dialect's MAC under ``mak`` as one function, MAC block -> MAC field value: what
    a caller holding a key for many messages (the host, per terminal) passes as ``mac_of``
    (the scheme, the key's form and its cached MAC object looked up once, not per message)."""
    if uses_x919(dialect):
        return mac.X919Mac(mak if len(mak) == 16 else mak + mak).compute
    return mac.CupMac(bytes(mak)).compute


def message_mac(dialect: Dialect, mak: bytes, message: Message) -> bytes:
    """The MAC field value of ``message`` under ``mak`` in the dialect's MAC scheme."""
    return _mac_over(dialect, mak, dialect.mac_block(message))


def apply_mac(dialect: Dialect, mak: bytes, message: Message) -> Message:
    """Set the MAC field of ``message`` (in place) and return it."""
    message[dialect.spec.mac_field] = message_mac(dialect, mak, message)
    return message


def apply_mac_encoded(dialect: Dialect, mak: bytes, message: Message, *,
                      mac_of: Callable[[bytes], bytes] | None = None) -> bytes:
    """:func:`apply_mac`, returning the message's encoded body (MTI onwards) as well:
    where the MAC field comes last the message is encoded once for both.
    ``mac_of``: :func:`mac_function` of this dialect and ``mak``, when the caller keeps it."""
    return dialect.encode_maced(
        message, mac_of or (lambda block: _mac_over(dialect, mak, block)))


def received_mac_ok(dialect: Dialect, mak: bytes, body: bytes, message: Message, *,
                    mac_of: Callable[[bytes], bytes] | None = None) -> bool:
    """True when the MAC of a received body (MTI onwards, as received) verifies under ``mak``.
    ``mac_of``: :func:`mac_function` of this dialect and ``mak``, when the caller keeps it."""
    field = dialect.spec.mac_field
    got = message.get(field)
    if not isinstance(got, bytes):
        return False
    try:
        if max(message.raw_items()) == field:
            block = dialect.received_mac_block(body)  # the bytes as received
        else:  # fields after the MAC field (F90 in iso87): MAC over the re-encoded message
            block = dialect.mac_block(message)
        want = mac_of(block) if mac_of is not None else _mac_over(dialect, mak, block)
    except Iso8583Error:
        return False
    return hmac.compare_digest(got, want)


__all__ = ["apply_mac", "apply_mac_encoded", "mac_function", "message_mac", "received_mac_ok",
           "uses_x919"]
