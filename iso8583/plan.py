"""Straight-line encode/decode plans generated per field set.

Messages of one kind carry the same fields every time, so a dialect generates,
once per distinct bitmap, a Python function that handles the whole message
without a per-field loop: each run of adjacent fixed-length BCD numeric fields
is converted with a single ``bytes.hex()`` / ``bytes.fromhex()`` and checked
with a single digit test, and every other field calls its compiled closure.

A plan only takes the fast road. When anything is off (a value of the wrong
type or length, a non-decimal nibble, truncated data) it raises
:class:`SlowPath` and the dialect reruns the per-field codec, which is the
reference and produces the precise error with field number and offset. Tests
check that both roads give the same results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from iso8583.codec import Decoder, Encoder, FieldValue, _prefix_codec
from iso8583.fields import Enc, FieldSpec, Kind

EncodePlan = Callable[[dict[int, FieldValue]], list[bytes]]
DecodePlan = Callable[[bytes, int, dict[int, FieldValue]], int]


class SlowPath(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The fast plan cannot handle this input; use the per-field codec."""


_AN_CHARS = bytes(range(0x30, 0x3A)) + bytes(range(0x41, 0x5B)) + bytes(range(0x61, 0x7B)) + b" "
_ANS_CHARS = bytes(range(0x20, 0x7F))


# BCD byte -> its value 0..99, or -1 when a nibble is not decimal
BCD_VALUE: tuple[int, ...] = tuple(
    (b >> 4) * 10 + (b & 15) if (b >> 4) < 10 and (b & 15) < 10 else -1 for b in range(256))


def _fast_class(spec: FieldSpec) -> str | None:
    """Which inline treatment a field gets: n, an, ans, b (fixed), vn/vb (BCD-length var)."""
    if not spec.fixed:
        if spec.len_enc is not Enc.BCD:
            return None
        if spec.kind in (Kind.N, Kind.Z) and spec.data_enc is Enc.BCD:
            return "vn"
        if spec.kind is Kind.B:
            return "vb"
        return None
    if spec.kind is Kind.N and spec.data_enc is Enc.BCD:
        return "n"
    if spec.kind in (Kind.AN, Kind.ANS):
        return spec.kind.value
    if spec.kind is Kind.B:
        return "b"
    return None


def _runs(numbers: Sequence[int], specs: Mapping[int, FieldSpec]
          ) -> list[tuple[str | None, list[int]]]:
    """Group field numbers into runs of one inline class (b and closures stay single)."""
    groups: list[tuple[str | None, list[int]]] = []
    for number in numbers:
        cls = _fast_class(specs[number])
        if cls in ("n", "an", "ans") and groups and groups[-1][0] == cls:
            groups[-1][1].append(number)
        else:
            groups.append((cls, [number]))
    return groups


def _namespace(prefix: str, numbers: Sequence[int], funcs: Mapping[int, object]
               ) -> dict[str, object]:
    namespace: dict[str, object] = {
        "SlowPath": SlowPath, "DIGITS": "0123456789", "fromhex": bytes.fromhex,
        "AN": _AN_CHARS, "ANS": _ANS_CHARS, "BCD": BCD_VALUE, "TRACK": "0123456789d"}
    namespace.update({f"{prefix}{n}": funcs[n] for n in numbers})
    return namespace


def build_encode_plan(numbers: Sequence[int], specs: Mapping[int, FieldSpec],
                      encoders: Mapping[int, Encoder]) -> EncodePlan:
    """A function ``items -> list of wire chunks`` for exactly these fields."""
    lines = ["def plan(items):", "  try:", "    pass"]
    out: list[str] = []
    prefixes: dict[str, object] = {}
    for cls, group in _runs(numbers, specs):
        tag = group[0]
        spec = specs[tag]
        if (cls == "vn" and spec.kind is Kind.N) or cls == "vb":
            # inline, as the field's encoder writes it: the length prefix (its own
            # table, P<n>), then the digits as BCD (odd: a 0 nibble on the free side)
            write_prefix = _prefix_codec(spec)[1]
            prefixes[f"P{tag}"] = tuple(write_prefix(n) for n in range(spec.max_len + 1))
            lines.append(f"    v{tag} = items[{tag}]")
            lines.append(f"    s{tag} = len(v{tag})")
            if cls == "vb":
                lines.append(f"    if type(v{tag}) is not bytes or s{tag} > {spec.max_len}: "
                             "raise SlowPath")
                out.append(f"P{tag}[s{tag}] + v{tag}")
                continue
            lines.append(f"    if type(v{tag}) is not str or s{tag} > {spec.max_len} "
                         f"or v{tag}.strip(DIGITS): raise SlowPath")
            padded = f'"0" + v{tag}' if spec.align == "right" else f'v{tag} + "0"'
            out.append(f"P{tag}[s{tag}] + fromhex({padded} if s{tag} & 1 else v{tag})")
            continue
        if cls in (None, "vn", "vb"):
            out.append(f"E{tag}(items[{tag}])")
            continue
        if cls == "b":
            size = specs[tag].max_len
            lines.append(f"    v{tag} = items[{tag}]")
            lines.append(f"    if type(v{tag}) is not bytes or len(v{tag}) != {size}: "
                         "raise SlowPath")
            out.append(f"v{tag}")
            continue
        parts = []
        for number in group:
            spec = specs[number]
            lines.append(f"    v{number} = items[{number}]")
            lines.append(f"    if len(v{number}) != {spec.max_len}: raise SlowPath")
            if cls == "n" and spec.max_len & 1:
                parts.append(f'"0" + v{number}' if spec.align == "right" else f'v{number} + "0"')
            else:
                parts.append(f"v{number}")
        lines.append(f"    t{tag} = " + " + ".join(parts))
        if cls == "n":
            lines.append(f"    if t{tag}.strip(DIGITS): raise SlowPath")
            out.append(f"fromhex(t{tag})")
        else:
            lines.append(f"    r{tag} = t{tag}.encode('ascii')")
            lines.append(f"    if r{tag}.translate(None, {cls.upper()}): raise SlowPath")
            out.append(f"r{tag}")
    lines.append("  except (TypeError, AttributeError, KeyError, UnicodeEncodeError):")
    lines.append("    raise SlowPath from None")
    lines.append("  return [" + ", ".join(out) + "]")
    namespace = _namespace("E", numbers, encoders)
    namespace.update(prefixes)
    exec("\n".join(lines), namespace)  # noqa: S102 - code generated from our own field table
    plan: EncodePlan = namespace["plan"]  # type: ignore[assignment]
    return plan


def build_decode_plan(numbers: Sequence[int], specs: Mapping[int, FieldSpec],
                      decoders: Mapping[int, Decoder]) -> DecodePlan:
    """A function ``(data, pos, fields) -> end`` for exactly these fields."""
    lines = ["def plan(data, pos, fields):", " try:"]
    for cls, group in _runs(numbers, specs):
        tag = group[0]
        spec = specs[tag]
        if cls is None:
            lines.append(f"  fields[{tag}], pos = D{tag}(data, pos)")
            continue
        if cls in ("vn", "vb"):
            if spec.len_type.value == 2:
                lines.append("  n = BCD[data[pos]]")
                lines.append("  start = pos + 1")
            else:
                lines.append("  lo = BCD[data[pos + 1]]")
                lines.append("  if data[pos] > 9 or lo < 0: raise SlowPath")
                lines.append("  n = data[pos] * 100 + lo")
                lines.append("  start = pos + 2")
            lines.append(f"  if n < 0 or n > {spec.max_len}: raise SlowPath")
            if cls == "vb":
                lines.append("  end = start + n")
                lines.append("  v = data[start:end]")
                lines.append("  if len(v) != n: raise SlowPath")
                lines.append(f"  fields[{tag}] = v")
            else:
                lines.append("  end = start + ((n + 1) >> 1)")
                lines.append("  h = data[start:end].hex()")
                lines.append("  if len(h) != (n + (n & 1)): raise SlowPath")
                lines.append("  if n & 1:")
                pad_ok = 'h[-1] != "0" and h[-1] != "f"' if spec.kind is Kind.Z else \
                    'h[-1] != "0"'
                lines.append(f"    if {pad_ok}: raise SlowPath")
                lines.append("    h = h[:-1]")
                if spec.kind is Kind.Z:
                    lines.append("  if h.strip(TRACK): raise SlowPath")
                    lines.append(f"  fields[{tag}] = h.upper()")
                else:
                    lines.append("  if h.strip(DIGITS): raise SlowPath")
                    lines.append(f"  fields[{tag}] = h")
            lines.append("  pos = end")
            continue
        if cls == "b":
            size = specs[tag].max_len
            lines.append(f"  end = pos + {size}")
            lines.append("  v = data[pos:end]")
            lines.append(f"  if len(v) != {size}: raise SlowPath")
            lines.append(f"  fields[{tag}] = v")
            lines.append("  pos = end")
            continue
        if cls != "n":
            total = sum(specs[n].max_len for n in group)
            lines.append(f"  end = pos + {total}")
            lines.append("  r = data[pos:end]")
            lines.append(f"  if len(r) != {total} or r.translate(None, {cls.upper()}): "
                         "raise SlowPath")
            lines.append("  t = r.decode('ascii')")
            offset = 0
            for number in group:
                size = specs[number].max_len
                lines.append(f"  fields[{number}] = t[{offset}:{offset + size}]")
                offset += size
            lines.append("  pos = end")
            continue
        nibbles = sum(specs[n].max_len + (specs[n].max_len & 1) for n in group)
        lines.append(f"  end = pos + {nibbles // 2}")
        lines.append("  h = data[pos:end].hex()")
        lines.append(f"  if len(h) != {nibbles} or not h.isdigit(): raise SlowPath")
        offset = 0
        pads = []
        for number in group:
            spec = specs[number]
            size = spec.max_len
            if size & 1:
                if spec.align == "right":
                    pads.append(offset)
                    lines.append(f"  fields[{number}] = h[{offset + 1}:{offset + 1 + size}]")
                else:
                    pads.append(offset + size)
                    lines.append(f"  fields[{number}] = h[{offset}:{offset + size}]")
                offset += size + 1
            else:
                lines.append(f"  fields[{number}] = h[{offset}:{offset + size}]")
                offset += size
        if pads:
            check = " or ".join(f'h[{p}] != "0"' for p in pads)
            lines.append(f"  if {check}: raise SlowPath")
        lines.append("  pos = end")
    lines.append(" except IndexError:")
    lines.append("  raise SlowPath from None")
    lines.append(" return pos")
    namespace = _namespace("D", numbers, decoders)
    exec("\n".join(lines), namespace)  # noqa: S102 - code generated from our own field table
    plan: DecodePlan = namespace["plan"]  # type: ignore[assignment]
    return plan
