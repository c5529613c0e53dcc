"""MAC benchmark: our X9.19 and CUP POS MAC against psec's X9.19 over the same 200 bytes.

Run: ``.venv/bin/python -m bench.mac [seconds]``. psec is installed into
bench/.deps on first use. Target: ours >= 3x psec for both MACs.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from functools import partial
from types import ModuleType

from bench._deps import ensure
from bench._util import BenchResult, measure_interleaved, ratio
from iso8583.crypto.mac import CupMac, X919Mac

PSEC_SPEC = "psec==1.3.0"
TARGET_RATIO = 3.0
KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
# A fixed, MAB-like 200-byte message (content does not affect timing).
DATA = bytes(range(200))


def _load_psec() -> ModuleType:
    target = ensure(PSEC_SPEC, "psec", no_deps=True)
    if str(target) not in sys.path:
        sys.path.append(str(target))  # appended: the venv's cryptography stays first
    import psec  # only importable after ensure()

    return psec  # type: ignore[no-any-return]


def _psec_x919(psec: ModuleType) -> Callable[[], bytes]:
    generate: Callable[..., bytes] = psec.mac.generate_retail_mac
    return partial(generate, KEY[:8], KEY[8:], DATA, padding=1)


def run(seconds: float = 1.0) -> list[BenchResult]:
    """Measure psec X9.19, our X9.19 and our CUP MAC, interleaved; each runs ~``seconds``."""
    psec = _load_psec()
    x919 = X919Mac(KEY)
    cup = CupMac(KEY[:8])
    anchor = _psec_x919(psec)
    if anchor() != x919.compute(DATA):
        raise RuntimeError("psec and iso8583.crypto.mac disagree on the X9.19 MAC")
    with warnings.catch_warnings():
        # psec builds TripleDES from the deprecated location with short keys;
        # silencing the warnings keeps their cost out of the anchor's time.
        warnings.simplefilter("ignore")
        return measure_interleaved(
            [
                ("psec X9.19", anchor),
                ("ours X9.19", partial(x919.compute, DATA)),
                ("ours CUP MAC", partial(cup.compute, DATA)),
            ],
            seconds,
        )


def _table(results: list[BenchResult]) -> str:
    anchor = results[0]
    lines = [
        f"MAC over {len(DATA)} bytes (best batch of interleaved rounds; anchor = "
        f"{anchor.name}, target >= {TARGET_RATIO:.0f}x)",
        f"{'operation':<16}{'ops/s':>14}{'us/op':>10}{'vs psec':>10}  verdict",
    ]
    for res in results:
        r = ratio(res, anchor)
        verdict = "anchor" if res is anchor else ("ok" if r >= TARGET_RATIO else "BELOW TARGET")
        lines.append(
            f"{res.name:<16}{res.ops_per_s:>14,.0f}{res.best_us:>10.2f}{r:>9.2f}x  {verdict}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the benchmark table; exit 2 with one line on bad arguments."""
    try:
        seconds = float(argv[0]) if argv else 1.0
    except ValueError:
        print(f"bench.mac: seconds must be a number, got {argv[0]!r}", file=sys.stderr)
        return 2
    print(_table(run(seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
