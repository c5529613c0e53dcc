"""Codec and MAC benchmark: ours against pyiso8583 4.0.1 and psec, in one run.

The message is a CUP 0200 sale with fields 2, 3, 4, 11, 12, 13, 14, 22, 23, 25,
26, 35, 41, 42, 49, 52, 53, 55 (a 160-byte TLV), 60 and 64. pyiso8583 gets a
specification generated from our CUP field table, and the benchmark first
checks that both codecs produce the same bytes, so both do the same work.
pyiso8583 is installed into ``bench/.deps`` and loaded under an alias because
its import name is also ``iso8583``.

Run: ``.venv/bin/python -m bench.codec [seconds]`` (default 1 s per measurement).
Targets: encode and decode >= 4x pyiso8583; CUP MAC and X9.19 >= 3x psec X9.19.
"""

from __future__ import annotations

import sys
from typing import Any

from bench import mac as mac_bench
from bench._deps import ensure, load_isolated
from bench._util import BenchResult, measure, ratio
from iso8583.dialects import get_dialect
from iso8583.fields import FieldSpec, Kind, LenType
from iso8583.message import Message

PYISO_SPEC = "pyiso8583==4.0.1"

_ICC = bytes.fromhex(
    "9F2608A1B2C3D4E5F60718" "9F270180" "9F101307010103A0A802010A010000000000AABBCCDD"
    "9F370412345678" "950500000000009A032511239C01009F0206000000001234" "5F2A020156"
    "82025800" "8408A000000333010101" "9F1A020156" "9F0306000000000000" "9F3303E0F9C8"
    "9F3403020300" "9F350122" "9F1E083132333435363738" "9F0902002" "09F4104000000019F360200AA")
ICC = (_ICC + bytes(160))[:160]

SALE_FIELDS: dict[int, str | bytes] = {
    2: "6225880000000019", 3: "000000", 4: "000000001234", 11: "000001", 12: "101500",
    13: "1123", 14: "3012", 22: "051", 23: "001", 25: "00", 26: "06",
    35: "6225880000000019D30122200000000000", 41: "10000001", 42: "123456789012345",
    49: "156", 52: bytes.fromhex("0123456789ABCDEF"), 53: "2600000000000000", 55: ICC,
    60: "22000001000", 64: bytes.fromhex("3132333435363738"),
}


def pyiso_spec_from(fields: dict[int, FieldSpec]) -> dict[str, dict[str, Any]]:
    """A pyiso8583 specification with exactly our CUP layout."""
    raw = {"data_enc": "b", "len_enc": "b", "len_type": 0, "desc": ""}
    spec: dict[str, dict[str, Any]] = {
        "h": {**raw, "max_len": 0}, "t": {**raw, "max_len": 2},
        "p": {**raw, "max_len": 8}, "1": {**raw, "max_len": 8},
    }
    for number, field in fields.items():
        entry: dict[str, Any] = {
            "desc": field.name, "len_enc": "bcd",
            "len_type": {LenType.FIXED: 0, LenType.LL: 1, LenType.LLL: 2}[field.len_type],
            "max_len": field.max_len,
        }
        if field.kind in (Kind.N, Kind.Z):
            entry.update(data_enc="b", len_count="nibbles")
            if not field.fixed or field.max_len % 2:
                entry["left_pad" if field.align == "right" else "right_pad"] = "0"
        elif field.kind is Kind.B:
            entry["data_enc"] = "b"
        else:
            entry["data_enc"] = "ascii"
        spec[str(number)] = entry
    return spec


def run(seconds: float = 1.0) -> list[tuple[BenchResult, BenchResult]]:
    """(anchor, ours) pairs for encode and decode."""
    pyiso = load_isolated(ensure(PYISO_SPEC, "iso8583"), "iso8583", "pyiso8583")
    cup = get_dialect("cup")
    spec = pyiso_spec_from(dict(cup.fields))
    message = Message("0200", SALE_FIELDS, dialect=cup)
    doc = {"t": "0200", **{str(k): v.hex().upper() if isinstance(v, bytes) else v
                           for k, v in SALE_FIELDS.items()}}
    theirs_raw = bytes(pyiso.encode(dict(doc), spec)[0])
    ours_raw = cup.encode(message)
    if theirs_raw != ours_raw:
        raise RuntimeError("pyiso8583 and our codec encode the sale differently")
    if cup.decode(ours_raw) != message:
        raise RuntimeError("our decode does not give back the sale")
    return [
        (measure("pyiso8583 encode", lambda: pyiso.encode(dict(doc), spec), seconds),
         measure("ours encode", lambda: cup.encode(message), seconds)),
        (measure("pyiso8583 decode", lambda: pyiso.decode(theirs_raw, spec), seconds),
         measure("ours decode", lambda: cup.decode(ours_raw), seconds)),
    ]


def main(argv: list[str]) -> int:
    try:
        seconds = float(argv[0]) if argv else 1.0
    except ValueError:
        print(f"bench.codec: seconds must be a number, got {argv[0]!r}", file=sys.stderr)
        return 2
    print(f"CUP 0200 sale, {len(SALE_FIELDS)} fields, F55 {len(ICC)} bytes; "
          f"{seconds:g} s per measurement")
    print(f"{'operation':<22}{'anchor ops/s':>14}{'ours ops/s':>14}{'ratio':>8}  target")
    for anchor, ours in run(seconds):
        op = ours.name.removeprefix("ours ")
        print(f"{op:<22}{anchor.ops_per_s:>14,.0f}{ours.ops_per_s:>14,.0f}"
              f"{ratio(ours, anchor):>7.2f}x  >= 4x pyiso8583 4.0.1")
    results = mac_bench.run(seconds)
    anchor_mac = results[0]
    for result in results[1:]:
        print(f"{result.name:<22}{anchor_mac.ops_per_s:>14,.0f}{result.ops_per_s:>14,.0f}"
              f"{ratio(result, anchor_mac):>7.2f}x  >= 3x {anchor_mac.name} (200 bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
