"""The terminal's settings: who it is (TID, MID, TMK), which dialect, and the flows' limits.

Kept in the journal's ``meta`` table (the TMK sealed), so a data directory is a
whole terminal: ``pos-terminal init`` writes it, every command reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from terminal.core.errors import ConfigError
from terminal.core.journal import Journal

TMK_KEY = "tmk"


@dataclass(frozen=True)
class TerminalSettings:
    """Typed settings; ``pos-terminal init`` and the settings screen change them."""

    tid: str
    mid: str
    dialect: str = "cup"
    merchant_name: str = "POS-REFUND DEMO SHOP"
    signon_form: int = 3  # F62 form asked for at sign-on: 60.3 001 / 003 / 004
    refund_age_days: int = 30  # originals older than this cannot be refunded here
    echo_idle_s: int = 300  # echo the host before a refund when the link has been idle
    pin_on_refund: bool = False  # ask the cardholder's PIN on refunds and voids too
    pin_timeout_s: int = 60
    card_timeout_s: int = 60
    host_timeout_s: float = 10.0
    max_resend: int = 3  # attempts per reversal/advice in one resolve round
    training: bool = False
    lang: str = "zh"

    def __post_init__(self) -> None:
        if len(self.tid) != 8 or not self.tid.isascii() or " " in self.tid:
            raise ConfigError(f"TID must be 8 characters without spaces, got {self.tid!r}")
        if len(self.mid) != 15 or not self.mid.isascii() or " " in self.mid:
            raise ConfigError(f"MID must be 15 characters without spaces, got {self.mid!r}")
        if self.signon_form not in (1, 3, 4):
            raise ConfigError("sign-on form must be 1, 3 or 4")
        if self.refund_age_days < 0:
            raise ConfigError("refund age limit must be 0 or more days")

    def to_meta(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f"setting.{f.name}"] = str(int(value)) if isinstance(value, bool) else str(value)
        return out

    @classmethod
    def from_journal(cls, journal: Journal) -> TerminalSettings:
        tid, mid = journal.get("setting.tid"), journal.get("setting.mid")
        if tid is None or mid is None:
            raise ConfigError("this data directory holds no terminal; run "
                              "'pos-terminal init --tid T --mid M --tmk HEX' first",
                              cashier_zh="终端未初始化", cashier_en="Terminal not set up")
        base = cls(tid=tid, mid=mid)
        changes: dict[str, object] = {}
        for f in fields(cls):
            raw = journal.get(f"setting.{f.name}")
            if raw is None or f.name in ("tid", "mid"):
                continue
            current = getattr(base, f.name)
            try:
                if isinstance(current, bool):
                    changes[f.name] = raw == "1"
                elif isinstance(current, int):
                    changes[f.name] = int(raw)
                elif isinstance(current, float):
                    changes[f.name] = float(raw)
                else:
                    changes[f.name] = raw
            except ValueError:
                raise ConfigError(f"setting {f.name} has a bad value {raw!r}") from None
        return replace(base, **changes)  # type: ignore[arg-type]

    def save(self, journal: Journal) -> None:
        journal.put_many(self.to_meta())


def load_tmk(journal: Journal) -> bytes:
    tmk = journal.get_secret(TMK_KEY)
    if tmk is None:
        raise ConfigError("no terminal master key; run 'pos-terminal init' first",
                          cashier_zh="终端主密钥未装载", cashier_en="No terminal master key")
    return tmk


def save_tmk(journal: Journal, tmk: bytes) -> None:
    if len(tmk) not in (8, 16, 24):
        raise ConfigError("TMK must be 8, 16 or 24 bytes (16, 32 or 48 hex digits)")
    journal.put_secret(TMK_KEY, tmk)


def init_terminal(journal: Journal, settings: TerminalSettings, tmk: bytes) -> None:
    """Make a data directory a terminal: settings and the sealed TMK.

    Re-running it with the same TID keeps the journal; a different TID on a
    journal that already holds transactions is refused (it would mix two
    terminals' money).
    """
    existing = journal.get("setting.tid")
    if existing is not None and existing != settings.tid and journal.last() is not None:
        raise ConfigError(f"this data directory is terminal {existing} and holds its journal; "
                          "use a new --data-dir for another terminal")
    save_tmk(journal, tmk)
    settings.save(journal)
