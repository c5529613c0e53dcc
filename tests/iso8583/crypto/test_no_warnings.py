"""No CryptographyDeprecationWarning (or any warning) from any crypto operation.

CryptographyDeprecationWarning is a UserWarning, so the pytest filter that turns
iso8583 DeprecationWarnings into errors does not see it; this test does.
"""

from __future__ import annotations

import warnings

from iso8583.crypto import des, dukpt, emv, kcv, mac, pinblock, signon

KEY16 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def test_every_operation_is_warning_free() -> None:
    # Cached cipher contexts would hide a warning emitted when they were built.
    des._ecb_contexts.cache_clear()
    des._cbc_cipher.cache_clear()
    mac._cup.cache_clear()
    mac._retail.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        des.encrypt_ecb(bytes(range(16)), bytes(8))
        des.decrypt_ecb(bytes(range(8)), bytes(8))
        des.encrypt_cbc(bytes(range(1, 17)), bytes(16))
        kcv.tdes_kcv(bytes(range(2, 18)))
        kcv.aes_kcv(bytes(16))
        mac.cup_pos_mac(bytes(range(3, 11)), b"mab" * 30)
        mac.cup_pos_mac(bytes(range(3, 19)), b"mab" * 30)
        mac.x919_mac(bytes(range(4, 20)), b"data" * 50)
        block = pinblock.encrypt_format0(bytes(range(5, 21)), "1234", "6225881234560019")
        pinblock.decrypt_format0(bytes(range(5, 21)), block, "6225881234560019")
        pinblock.encrypt_format4(bytes(16), "1234", "6225881234560019")
        keys = signon.WorkingKeys(bytes(range(16)), bytes(range(8)), bytes(range(16, 32)))
        signon.unwrap_signon_keys(KEY16, signon.wrap_signon_keys(KEY16, keys, 4))
        ipek = dukpt.derive_ipek(KEY16, bytes.fromhex("FFFF9876543210E00000"))
        dukpt.derive_transaction_key(ipek, bytes.fromhex("FFFF9876543210E00003"))
        emv.compute_arqc(KEY16, "6225881234560019", "01", {
            0x9F02: bytes(6), 0x9F1A: b"\x01\x56", 0x95: bytes(5), 0x5F2A: b"\x01\x56",
            0x9A: b"\x26\x11\x23", 0x9C: b"\x20", 0x9F37: bytes(4), 0x82: b"\x7c\x00",
            0x9F36: b"\x00\x01",
        })
    assert [str(w.message) for w in caught] == []
