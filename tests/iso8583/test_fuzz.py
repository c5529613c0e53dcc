"""Fuzz the decoder with random and mutated frames: only DecodeError may escape.

CI runs 20,000 frames (x 2 dialects x 3 entry points); ``-m slow`` runs 200,000.
"""

from __future__ import annotations

import os
import random

import pytest

from iso8583.dialects import get_dialect
from iso8583.errors import DecodeError

CUP = get_dialect("cup")
ISO = get_dialect("iso87")


def _seed_frames() -> list[bytes]:
    sale = CUP.message("0200", {
        2: "6225880000000019", 3: "000000", 4: 1234, 11: 1, 12: "101500", 13: "1123",
        14: "3012", 22: "051", 23: "001", 25: "00", 26: "06",
        35: "6225880000000019D30122200000000000", 41: "10000001", 42: "123456789012345",
        49: "156", 52: bytes(8), 53: "2600000000000000",
        55: bytes.fromhex("9F2608") + bytes(8) + bytes.fromhex("9F2701809F3602000A"),
        60: "22000001000", 61: "0000010000021123", 63: "CUP", 64: bytes(8)})
    refund = CUP.message("0220", {2: "6225880000000019", 3: "200000", 4: 500, 11: 2,
                                  37: "000000000001", 41: "10000001", 42: "123456789012345",
                                  49: "156", 60: "25000001000", 61: "0000010000011123",
                                  63: "CUP", 64: bytes(8)})
    iso = ISO.message("0400", {2: "4761739001010010", 3: "000000", 4: 100, 11: 5,
                                90: "0" * 42, 128: bytes(8)})
    return [CUP.pack(sale, tpdu=bytes.fromhex("6000030000")),
            CUP.pack(refund, tpdu=bytes.fromhex("6000030000")), ISO.pack(iso)]


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and data:  # flip a byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1 and data:  # truncate
            del data[rng.randrange(len(data)):]
        elif op == 2:  # insert
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif op == 3 and data:  # flip a bitmap bit
            data[min(len(data) - 1, 15 + rng.randrange(8))] ^= 1 << rng.randrange(8)
        elif op == 4 and data:  # delete a run
            start = rng.randrange(len(data))
            del data[start:start + rng.randint(1, 8)]
    return bytes(data)


def _fuzz(count: int, seed: int) -> int:
    rng = random.Random(seed)
    seeds = _seed_frames()
    errors = 0
    for i in range(count):
        if i % 4 == 0:
            frame = rng.randbytes(rng.randint(0, 200))
        else:
            frame = _mutate(rng, seeds[i % len(seeds)])
        for dialect in (CUP, ISO):
            try:
                dialect.unpack(frame)
            except DecodeError:
                errors += 1
            try:
                dialect.decode(frame[2:])
            except DecodeError:
                errors += 1
            try:
                dialect.frame_decoder().feed(frame)
            except DecodeError:
                errors += 1
    return errors


def test_fuzz_ci_count() -> None:
    count = int(os.environ.get("POS_FUZZ_COUNT", "20000"))
    assert _fuzz(count, seed=1) > 0  # the fuzzer does reach the error paths


@pytest.mark.slow
def test_fuzz_full_count() -> None:
    assert _fuzz(200_000, seed=2) > 0
