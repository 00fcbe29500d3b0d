"""Helpers for tests/e2e/test_audit.py: the test card numbers and every way
they can be printed, a scanner for raw bytes (store files, dumps, exports,
logs), the `hoop audit` command line and the export's records."""
import json
import re
import subprocess
from pathlib import Path

from conftest import HOOP_BIN


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Luhn-valid test numbers of several brands. Each is used in the workload in
# the place its name says (see test_audit.py); all end up in the table and so
# in recorded result rows.
PANS = {
    "visa": "4111111111111111",          # SQL literals, errors, prepared-statement parameter
    "mastercard": "5555555555554444",    # text bind parameter, unique violation, notice
    "amex": "378282246310005",           # inside a text parameter, binary bigint parameter, cast error
    "discover": "6011111111111117",      # binary bind parameter, RAISE inside a function
    "visa_dashed": "4012888888881881",   # printed 4012-8888-8888-1881
    "mc_spaced": "5105105105105100",     # printed 5105 1051 0510 5100
    "jcb": "3530111333300000",           # COPY FROM STDIN data only (then in results)
    "diners": "30569309025904",          # COPY FROM STDIN data only (then in results)
}
for _name, _pan in PANS.items():
    assert luhn_valid(_pan), _name


def groups(pan: str):
    """How the brand prints the number (4-4-4-4, Amex 4-6-5, Diners 4-6-4)."""
    if len(pan) == 15:
        sizes = [4, 6, 5]
    elif len(pan) == 14:
        sizes = [4, 6, 4]
    else:
        sizes = [4] * (len(pan) // 4) + ([len(pan) % 4] if len(pan) % 4 else [])
    out, at = [], 0
    for size in sizes:
        out.append(pan[at:at + size])
        at += size
    return out


def printed(pan: str, sep: str) -> str:
    return sep.join(groups(pan))


def raw_forms(pan: str):
    """Every form searched for literally: plain, brand grouping and groups of
    four with a space or a dash, reversed, the hex of its ASCII text (a bytea
    shown as hex), and the hex of the big-endian int8 (a binary bigint
    parameter recorded as hex)."""
    forms = {pan, pan[::-1]}
    fours = [pan[i:i + 4] for i in range(0, len(pan), 4)]
    for sep in (" ", "-"):
        forms.add(printed(pan, sep))
        forms.add(sep.join(fours))
    out = {f.encode() for f in forms}
    ascii_hex = pan.encode().hex()
    out |= {ascii_hex.encode(), ascii_hex.upper().encode()}
    int8_hex = int(pan).to_bytes(8, "big").hex()
    out |= {int8_hex.encode(), int8_hex.upper().encode()}
    return out


DIGIT_RUN = re.compile(rb"[0-9](?:[ -]?[0-9])+")


def scan(data: bytes, where: str = "data"):
    """Finds every test PAN in `data`; returns human-readable hits that never
    show more than the last four digits. Two passes: each literal form, and
    every run of digits (single spaces or dashes between them dropped) that
    contains a test PAN or its reverse as a substring."""
    hits = []
    for name, pan in PANS.items():
        for form in raw_forms(pan):
            at = data.find(form)
            if at >= 0:
                hits.append(f"{where}: {name} (…{pan[-4:]}) as a {len(form)}-byte form at offset {at}")
        for match in DIGIT_RUN.finditer(data):
            digits = re.sub(rb"[ -]", b"", match.group()).decode()
            if pan in digits or pan[::-1] in digits:
                hits.append(f"{where}: {name} (…{pan[-4:]}) in a digit run at offset {match.start()}")
                break
    return hits


def scan_files(paths):
    hits = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            hits += scan(path.read_bytes(), str(path))
    return hits


def masked(text: str) -> str:
    """`pan_last4` as the gateway and the store apply it to a printed card
    number: every digit but the last four becomes `*`, separators stay."""
    digits = sum(ch.isdigit() for ch in text)
    out, seen = [], 0
    for ch in text:
        if ch.isdigit():
            seen += 1
            out.append("*" if seen <= digits - 4 else ch)
        else:
            out.append(ch)
    return "".join(out)


def masked_token(pan: str) -> re.Pattern:
    """A masked rendering of `pan`: stars (separators allowed), last four kept."""
    return re.compile(rb"\*[* -]{7,}" + pan[-4:].encode() + rb"(?![0-9])")


def hoop(*args, check=True, timeout=60):
    res = subprocess.run([str(HOOP_BIN), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"hoop {' '.join(map(str, args))} exited {res.returncode}:\n{res.stdout}{res.stderr}")
    return res


class Export:
    """`hoop audit export` read back: every line with its payload decoded."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.lines = []
        for raw in (self.dir / "records.jsonl").read_text().splitlines():
            line = json.loads(raw)
            line["record"] = json.loads(line["payload"])
            self.lines.append(line)

    def of(self, event_type, instance=None):
        return [l for l in self.lines if l["event_type"] == event_type
                and (instance is None or l["instance"] == instance)]

    def session_of(self, subject, instance=None):
        starts = [l for l in self.of("session_start", instance)
                  if l["record"]["identity"]["subject"] == subject]
        assert len(starts) == 1, f"expected one session of {subject}, found {len(starts)}"
        return starts[0]["session_id"]

    def session(self, session_id):
        """(statement, statement_end or None) pairs in chain order."""
        lines = sorted((l for l in self.lines if l.get("session_id") == session_id),
                       key=lambda l: (l["instance"], l["seq"]))
        ends = {(l["instance"], l["record"]["begin_seq"]): l
                for l in lines if l["event_type"] == "statement_end"}
        return [(l, ends.get((l["instance"], l["seq"])))
                for l in lines if l["event_type"] == "statement"]

    def files_bytes(self):
        return b"".join(p.read_bytes() for p in sorted(self.dir.iterdir()) if p.is_file())


def export(config: Path, out: Path) -> Export:
    hoop("audit", "export", "-c", config, "--out", out)
    return Export(out)


def find(pairs, fragment, nth=0):
    """The nth statement (and its end) whose recorded SQL contains `fragment`."""
    found = [p for p in pairs if fragment in p[0]["record"]["sql"]]
    assert len(found) > nth, (f"no statement record with {fragment!r}; recorded: "
                              f"{[p[0]['record']['sql'][:80] for p in pairs]}")
    return found[nth]
