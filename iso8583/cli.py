"""``pos-iso``: the payments developer's command-line tool.

Decode and encode ISO 8583 messages of either dialect, compute or verify MACs,
build PIN blocks, compute key check values and check CUP sign-on keys. Every
subcommand takes ``--json``. Bad input exits with code 2 and one line on
stderr; a MAC that does not verify exits with code 1.

Examples::

    pos-iso decode 00...            # a whole frame, a payload or a bare body
    echo '{"mti":"0800","fields":{"11":"000001"}}' | pos-iso encode --frame
    pos-iso mac FRAME_HEX --alg cup --key 5BB5C72CD00B7338 --verify
    pos-iso pinblock --pin 1234 --pan 5544332211009966
    pos-iso kcv --key 0123456789ABCDEFFEDCBA9876543210
    pos-iso signon-keys --tmk TMK_HEX --f62 F62_HEX
    pos-iso trace show demo.jsonl   # a recorded trace as a conversation
    pos-iso trace diff a.jsonl b.jsonl   # exit 1 when two runs differ
"""

from __future__ import annotations

import argparse
import binascii
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from iso8583.dialect import Dialect, Frame
from iso8583.dialects import get_dialect, names
from iso8583.errors import Iso8583Error
from iso8583.masking import mask_pan
from iso8583.message import Message
from iso8583.pretty import format_message, message_dict
from iso8583.trace import (
    TraceEntry,
    conversation,
    diff,
    format_conversation,
    format_differences,
    parse_trace,
)


class UsageError(Exception):
    """The user's input cannot be used; the text is shown as is."""


def _fail(text: str) -> NoReturn:
    raise UsageError(text)


def _hex(text: str, what: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        return binascii.unhexlify(cleaned)
    except (binascii.Error, ValueError):
        _fail(f"{what} is not valid hex")


def _hex_arg(value: str | None, what: str) -> bytes:
    if value is None or value == "-":
        data = sys.stdin.read()
        if not data.strip():
            _fail(f"no {what} given (pass it as an argument or on stdin)")
        return _hex(data, what)
    return _hex(value, what)


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(text)


# --- decode ------------------------------------------------------------------------


def _split(dialect: Dialect, data: bytes, form: str) -> Frame:
    """Decode ``data`` as a frame, a payload (no length) or a bare body."""
    if form == "frame":
        return dialect.unpack(data)
    if form == "payload":
        return dialect.unpack_payload(data)
    if form == "body":
        return Frame(None, None, dialect.decode(data), data)
    size = dialect.spec.length_bytes
    if len(data) > size and int.from_bytes(data[:size], "big") == len(data) - size:
        return dialect.unpack(data)
    if dialect.spec.tpdu and data[:1] == b"\x60":
        return dialect.unpack_payload(data)
    return Frame(None, None, dialect.decode(data), data)


def cmd_decode(args: argparse.Namespace) -> int:
    dialect = get_dialect(args.dialect)
    frame = _split(dialect, _hex_arg(args.hex, "message"), args.format)
    head = []
    if frame.tpdu is not None:
        head.append(f"TPDU {frame.tpdu.hex().upper()}")
    if frame.header is not None:
        head.append(f"header {frame.header.hex().upper()}")
    text = "\n".join([*head, format_message(frame.message, dialect, reveal=args.reveal)])
    data = message_dict(frame.message, dialect, reveal=args.reveal)
    if frame.tpdu is not None:
        data["tpdu"] = frame.tpdu.hex().upper()
    if frame.header is not None:
        data["header"] = frame.header.hex().upper()
    _emit(args, data, text)
    return 0


# --- encode ------------------------------------------------------------------------


def _message_from_json(dialect: Dialect, text: str) -> Message:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"input is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    if not isinstance(doc, dict) or not isinstance(doc.get("mti"), str):
        _fail('JSON must be an object like {"mti": "0200", "fields": {"3": "000000"}}')
    fields = doc.get("fields", {})
    if not isinstance(fields, dict):
        _fail('"fields" must be an object of field number -> value')
    message = dialect.message(doc["mti"])
    for key, raw in fields.items():
        value = raw
        if not str(key).isdigit():
            _fail(f"field key {key!r} is not a number")
        number = int(key)
        spec = dialect.fields.get(number)
        if spec is None:
            _fail(f"field {number} is not defined in dialect {dialect.name}")
        if spec.kind.value == "b":
            if not isinstance(value, str):
                _fail(f"field {number} is binary: give it as a hex string")
            value = _hex(value, f"field {number}")
        elif not isinstance(value, str | int) or isinstance(value, bool):
            _fail(f"field {number} must be a string or a number")
        message[number] = value
    return message


def _apply_mac(dialect: Dialect, message: Message, alg: str, key: bytes) -> None:
    mac_field = dialect.spec.mac_field
    message[mac_field] = _mac_function(alg)(key, dialect.mac_block(message))


def cmd_encode(args: argparse.Namespace) -> int:
    dialect = get_dialect(args.dialect)
    source = args.json_text if args.json_text not in (None, "-") else sys.stdin.read()
    message = _message_from_json(dialect, source)
    if args.mac_key:
        _apply_mac(dialect, message, args.alg, _hex(args.mac_key, "MAC key"))
    tpdu = _hex(args.tpdu, "TPDU") if args.tpdu else None
    header = _hex(args.header, "header") if args.header else None
    out = (dialect.pack(message, tpdu=tpdu, header=header) if args.frame
           else dialect.encode(message))
    _emit(args, {"hex": out.hex().upper(), "length": len(out)}, out.hex().upper())
    return 0


# --- MAC ---------------------------------------------------------------------------


def _mac_function(alg: str) -> Callable[[bytes, bytes], bytes]:
    from iso8583.crypto import mac
    if alg == "cup":
        return mac.cup_pos_mac
    if alg == "x919":
        return mac.x919_mac
    _fail(f"unknown MAC algorithm {alg!r}")


def cmd_mac(args: argparse.Namespace) -> int:
    dialect = get_dialect(args.dialect)
    frame = _split(dialect, _hex_arg(args.hex, "message"), args.format)
    mac_field = dialect.spec.mac_field
    has_mac = mac_field in frame.message
    block = (dialect.received_mac_block(frame.body) if has_mac
             else dialect.mac_block(frame.message))
    computed = _mac_function(args.alg)(_hex(args.key, "MAC key"), block)
    data: dict[str, Any] = {"alg": args.alg, "mac": computed.hex().upper(),
                            "mac_input_length": len(block)}
    if args.verify:
        if not has_mac:
            _fail(f"--verify needs a message that carries F{mac_field}")
        received = frame.message[mac_field]
        assert isinstance(received, bytes)
        ok = received == computed
        data.update(received=received.hex().upper(), verified=ok)
        _emit(args, data, f"F{mac_field} {received.hex().upper()}: "
              f"{'MAC OK' if ok else 'MAC MISMATCH, expected ' + computed.hex().upper()}")
        return 0 if ok else 1
    _emit(args, data, computed.hex().upper())
    return 0


# --- keys and PIN blocks -------------------------------------------------------------


def cmd_kcv(args: argparse.Namespace) -> int:
    from iso8583.crypto import kcv
    key = _hex(args.key, "key")
    value = kcv.aes_kcv(key, args.length or 5) if args.aes else kcv.tdes_kcv(key, args.length or 3)
    _emit(args, {"kcv": value.hex().upper()}, value.hex().upper())
    return 0


def cmd_pinblock(args: argparse.Namespace) -> int:
    from iso8583.crypto import pinblock
    pan = args.pan
    if not (pan.isdigit() and 12 <= len(pan) <= 19):
        _fail("--pan must be 12 to 19 digits")
    key = _hex(args.key, "PIN key") if args.key else None
    data: dict[str, Any] = {"pan": mask_pan(pan), "format": args.format}
    if args.decrypt:
        block = _hex(args.decrypt, "PIN block")
        if key is None:
            _fail("--decrypt needs --key")
        if args.format == 4:
            pin = pinblock.decrypt_format4(key, block, pan)
        else:
            pin = pinblock.decrypt_format0(key, block, pan)
        shown = pin if args.reveal else "*" * len(pin)
        data.update(pin=shown, pin_length=len(pin))
        _emit(args, data, f"PIN {shown} ({len(pin)} digits)")
        return 0
    if not args.pin:
        _fail("give --pin to build a block or --decrypt BLOCK to read one")
    if args.format == 4:
        if key is None:
            _fail("format 4 is always enciphered: give --key (16/24/32-byte AES key)")
        block = pinblock.encrypt_format4(key, args.pin, pan)
    elif key is None:
        block = pinblock.clear_format0(args.pin, pan)
    else:
        block = pinblock.encrypt_format0(key, args.pin, pan)
    # a PIN block is sensitive: show it only on request
    text = block.hex().upper() if args.reveal else f"<{len(block)}-byte PIN block; --reveal>"
    data["pin_block"] = text
    data["enciphered"] = key is not None
    _emit(args, data, text)
    return 0


def cmd_signon_keys(args: argparse.Namespace) -> int:
    from iso8583.crypto import kcv, signon
    tmk = _hex(args.tmk, "TMK")
    f62 = _hex(args.f62, "F62")
    keys = signon.unwrap_signon_keys(tmk, f62)
    report: dict[str, Any] = {"form": len(f62), "check_values": "ok"}
    lines = [f"F62: {len(f62)} bytes, every check value matches"]
    for name in ("pik", "mak", "tdk"):
        key = getattr(keys, name, None)
        if key is None:
            continue
        raw = key if isinstance(key, bytes) else key.reveal()
        entry = {"length": len(raw), "kcv": kcv.tdes_kcv(raw, 4).hex().upper()}
        if args.reveal:
            entry["key"] = raw.hex().upper()
        report[name] = entry
        shown = f" key {raw.hex().upper()}" if args.reveal else ""
        lines.append(f"  {name.upper()}: {len(raw)} bytes, check value {entry['kcv']}{shown}")
    _emit(args, report, "\n".join(lines))
    return 0


# --- traces --------------------------------------------------------------------------


def _read_trace(path: str) -> list[TraceEntry]:
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read trace {path}: {getattr(exc, 'strerror', None) or exc}")
    return parse_trace(text, name=path)


def cmd_trace_show(args: argparse.Namespace) -> int:
    entries = _read_trace(args.file)
    _emit(args, {"file": args.file, "messages": conversation(entries)},
          format_conversation(entries, name=args.file))
    return 0


def cmd_trace_diff(args: argparse.Namespace) -> int:
    a, b = _read_trace(args.a), _read_trace(args.b)
    differences = diff(a, b, ignore=args.ignore)
    _emit(args, {"a": args.a, "b": args.b, "equal": not differences,
                 "messages": [len(a), len(b)], "ignored": list(args.ignore),
                 "differences": [d.as_dict() for d in differences]},
          format_differences(differences, a_name=args.a, b_name=args.b))
    return 1 if differences else 0


# --- wiring ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pos-iso", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    def message_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("hex", nargs="?", help="hex message; '-' or absent reads stdin")
        p.add_argument("--dialect", default="cup", choices=names())
        p.add_argument("--format", default="auto", choices=["auto", "frame", "payload", "body"],
                       help="frame = length+TPDU+header+body, payload = no length, body = MTI on")

    p = add("decode", cmd_decode, "decode a frame or message and list its fields")
    message_args(p)
    p.add_argument("--reveal", action="store_true", help="show PAN, track, PIN block, keys")

    p = add("encode", cmd_encode, "encode a message from JSON")
    p.add_argument("json_text", nargs="?", help="JSON text; '-' or absent reads stdin")
    p.add_argument("--dialect", default="cup", choices=names())
    p.add_argument("--frame", action="store_true", help="add length prefix (+TPDU/header)")
    p.add_argument("--tpdu", help="TPDU hex (cup), default 6000000000")
    p.add_argument("--header", help="header hex (cup), default 602200000000")
    p.add_argument("--mac-key", help="compute F64 with this key")
    p.add_argument("--alg", default="cup", choices=["cup", "x919"])

    p = add("mac", cmd_mac, "compute or verify the MAC of a message")
    message_args(p)
    p.add_argument("--alg", default="cup", choices=["cup", "x919"])
    p.add_argument("--key", required=True, help="MAK hex (8 or 16 bytes)")
    p.add_argument("--verify", action="store_true", help="check the message's own MAC")

    p = add("pinblock", cmd_pinblock, "build or read an ISO 9564 PIN block")
    p.add_argument("--pin")
    p.add_argument("--pan", required=True)
    p.add_argument("--format", type=int, default=0, choices=[0, 4])
    p.add_argument("--key", help="PIN key hex (TDES for format 0, AES for format 4)")
    p.add_argument("--decrypt", metavar="BLOCK", help="recover the PIN from this block")
    p.add_argument("--reveal", action="store_true", help="show the PIN block / PIN")

    p = add("kcv", cmd_kcv, "key check value")
    p.add_argument("--key", required=True)
    p.add_argument("--length", type=int, help="bytes of check value (default 3, AES 5)")
    p.add_argument("--aes", action="store_true", help="AES key (CMAC check value)")

    p = add("signon-keys", cmd_signon_keys, "unwrap and check CUP sign-on working keys (F62)")
    p.add_argument("--tmk", required=True, help="terminal master key hex")
    p.add_argument("--f62", required=True, help="F62 of the 0810 sign-on response, hex")
    p.add_argument("--reveal", action="store_true", help="print the clear working keys")

    trace = sub.add_parser("trace", help="show or compare recorded ISO 8583 traces (JSONL)",
                           description="show or compare recorded ISO 8583 traces (JSONL)")
    trace_sub = trace.add_subparsers(dest="trace_command", required=True)
    p = trace_sub.add_parser("show", help="a trace as a readable conversation")
    p.set_defaults(func=cmd_trace_show)
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = trace_sub.add_parser("diff", help="compare two traces field by field, ignoring what "
                             "changes every run (STAN, times, RRN, auth code, MAC, "
                             "cryptograms); exit 1 when they differ")
    p.set_defaults(func=cmd_trace_diff)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--ignore", action="append", default=[], metavar="FIELD",
                   help="also ignore this field, ICC tag or part (60, 55.9F10, 61.1; "
                        "55 = every ICC tag); repeatable")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed a usage line
        return 0 if exc.code in (0, None) else 2
    try:
        result: int = args.func(args)
    except UsageError as exc:
        print(f"pos-iso: {exc}", file=sys.stderr)
        return 2
    except Iso8583Error as exc:
        print(f"pos-iso: {exc}", file=sys.stderr)
        return 2
    except (KeyError, ValueError) as exc:
        print(f"pos-iso: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return result


if __name__ == "__main__":
    sys.exit(main())
