"""The audit trail end to end (issue 6): one statement record per statement,
written before it is forwarded and completed with its outcome; no readable
card number anywhere in the store (PCI DSS 3.5.1); accurate outcomes;
`hoop audit verify|sessions|replay|export`; both stores; fail closed.

One Postgres 15 cluster (no extension: the gateway's content detection is
what masks) serves the agents' database `payments` and, for the Postgres
store, the audit database `hoop_audit` (owned by the login role
`hoop_audit`, password in a file; test_postgres_store_with_insert_and_select_only
tries the README's INSERT-and-SELECT-only grant). Each gateway has its own
directory, so its SQLite store is `audit.db` next to its `hoop.toml`.

Fail closed: the store stops taking writes while a session is open (SQLite:
another process holds the write lock past the writer's busy timeout;
Postgres: the audit role may no longer log in and its connection is
terminated). A new login and a statement are refused with 58000, the
statement never reaches Postgres, and once the store is back the same
session runs and is recorded, and `hoop audit verify` passes.

Test card numbers (audit_support.PANS) go into SQL literals, text and binary
bind parameters, result rows (text and binary, bytea too), COPY FROM STDIN
and COPY TO STDOUT data, error messages and notices, through psycopg 3 and
psql. Then the raw bytes of audit.db / -wal / -shm / the commit log, a text
pg_dump of the Postgres store, the export directory, the replay output and
the gateway's log are scanned for every printed form of every test PAN."""
import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from audit_support import (PANS, Export, export, find, hoop, masked, masked_token, printed, scan,
                           scan_files)
from conftest import GATEWAY_PASSWORD, PG_BIN, ROOT, Cluster, Gateway, as_postgres

V, M, A, D = PANS["visa"], PANS["mastercard"], PANS["amex"], PANS["discover"]
VD, MS, J, DI = PANS["visa_dashed"], PANS["mc_spaced"], PANS["jcb"], PANS["diners"]
VD_DASHED = printed(VD, "-")   # 4012-8888-8888-1881
MS_SPACED = printed(MS, " ")   # 5105 1051 0510 5100
A_SPACED = printed(A, " ")     # 3782 822463 10005

AUDIT_PASSWORD = "e2e-audit-pw-42"
MAPPINGS = '[[role_mapping]]\ngroup = "fraud-agents"\nrole = "fraud_agent"\n'
BINARY = re.compile(r"^<binary, \d+ bytes>$")
RULES = '\n[[rules]]\nname = "block-drop-table"\naction = "block"\nkinds = ["ddl_drop_table"]\n'

# Built by the superuser: a table per gateway, and functions that put their
# argument into a notice and into an error.
FUNCTIONS = """
CREATE FUNCTION public.leak_notice(t text) RETURNS text LANGUAGE plpgsql AS
    $f$ BEGIN RAISE NOTICE 'value % seen', t USING DETAIL = t; RETURN 'ok'; END $f$;
CREATE FUNCTION public.leak_error(t text) RETURNS text LANGUAGE plpgsql AS
    $f$ BEGIN RAISE EXCEPTION 'bad value %', t USING DETAIL = t; END $f$;
GRANT EXECUTE ON FUNCTION public.leak_notice(text), public.leak_error(text) TO PUBLIC;"""


def make_table(cluster, name):
    cluster.psql("payments", f"""
        CREATE TABLE public.{name}(id int PRIMARY KEY, pan text UNIQUE, holder text, note text);
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.{name} TO fraud_agent;""")


def dsn(gateway, sub):
    return (f"host=127.0.0.1 port={gateway.port} dbname=payments user={sub} "
            f"password={gateway.token(sub=sub)}")


def toml_value(value):
    """A TOML value: JSON's spelling, but dicts as inline tables (`{ file = "…" }`)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def audit_section(**keys):
    return "\n[audit]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in keys.items())


def start_gateway(cluster, base, name, audit=None, pg_store=False, audit_db="hoop_audit"):
    """A gateway in base/name; with pg_store its store is the cluster's
    `audit_db` database, instance id `name`."""
    gw_dir = base / name
    gw_dir.mkdir(parents=True)
    keys = {"record_rows": 20, **(audit or {})}
    if pg_store:
        (gw_dir / "audit-db.pw").write_text(AUDIT_PASSWORD + "\n")
        os.chmod(gw_dir / "audit-db.pw", 0o600)
        keys = {"store": "postgres", "instance_id": name, "password": {"file": "audit-db.pw"},
                "url": f"host=127.0.0.1 port={cluster.port} user=hoop_audit dbname={audit_db}", **keys}
    gateway = Gateway(cluster, gw_dir, mappings=MAPPINGS + RULES + audit_section(**keys))
    gateway.start()
    return gateway


def store_files(gateway):
    """The SQLite file, its WAL and shared memory, and the gateway's commit
    log (records under load are made durable there first)."""
    files = [gateway.dir / f"audit.db{suffix}" for suffix in ("", "-wal", "-shm")]
    logs = sorted(gateway.dir.glob("audit.db-log-*"))
    assert logs, "the gateway's commit log beside audit.db"
    return files + logs


# ---------------------------------------------------------------------------
# The workloads


def pan_workload_psycopg(gateway, t, sub="agent-pan-py"):
    """Card numbers through psycopg 3: literals, text and binary parameters,
    text and binary results, a prepared statement, COPY both ways, errors and
    a notice. Returns what the client saw (masked by the gateway)."""
    seen = []
    with psycopg.connect(dsn(gateway, sub), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: seen.append((d.message_primary, d.message_detail)))
        # Simple protocol, PANs in SQL literals (one printed with dashes).
        conn.execute(f"INSERT INTO {t} VALUES (1, '{V}', 'Ada', 'dashed {VD_DASHED} in a note')")
        # Extended protocol, text parameters; binary parameters.
        conn.execute(f"INSERT INTO {t} VALUES (%s, %s, %s, %s)", (2, M, "Bob", f"amex {A}"))
        conn.execute(f"INSERT INTO {t} VALUES (%b, %b, %b, %b)", (3, D, "Cy", f"spaced {MS_SPACED}"))
        # Card numbers as numbers, one text and one binary parameter.
        # (psycopg sends a Python int in binary, a str as text.)
        seen.append(conn.execute("SELECT %s::bigint::text AS n, %b::bigint::text AS m", (M, int(A))).fetchall())
        # Results, text and binary (with a bytea holding the ASCII digits).
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                cur.execute(f"SELECT id, pan, holder, note, convert_to(pan, 'UTF8') AS raw FROM {t} ORDER BY id")
                seen.append(cur.fetchall())
        # A prepared statement (Parse once, Bind/Execute three times).
        for _ in range(3):
            seen.append(conn.execute(f"SELECT id, note FROM {t} WHERE pan = %s", (V,), prepare=True).fetchall())
        with conn.cursor() as cur:
            with cur.copy(f"COPY {t} (id, pan, holder, note) FROM STDIN") as copy:
                copy.write_row((4, J, "Di", f"diners {DI}"))
            with cur.copy(f"COPY (SELECT id, pan, holder, note FROM {t} ORDER BY id) TO STDOUT") as copy:
                seen.append(b"".join(bytes(chunk) for chunk in copy))
        # Errors that echo card numbers.
        for sql, params, state in [(f"SELECT '{V}'::int", None, "22003"),
                                   (f"SELECT 'card {V}'::int", None, "22P02"),
                                   (f"INSERT INTO {t} VALUES (%s, %s, 'dup', NULL)", (20, M), "23505"),
                                   ("SELECT leak_error(%s)", (D,), "P0001")]:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(sql, params)
            assert err.value.sqlstate == state, (sql, str(err.value))
            seen.append((str(err.value), err.value.diag.message_detail))
        conn.execute("SELECT leak_notice(%s)", (M,))
        seen.append(conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall())
    return seen


def pan_workload_psql(gateway, t, sub="agent-pan-psql"):
    """Card numbers through psql (simple protocol): literals (dashed and
    spaced), SQL PREPARE/EXECUTE with a literal argument, COPY FROM STDIN
    and TO STDOUT, a cast error."""
    script = "\n".join([
        "\\set ON_ERROR_STOP 0",
        f"INSERT INTO {t} VALUES (5, '{VD_DASHED}', 'Ed', 'literal dashed');",
        f"SELECT id, pan FROM {t} WHERE pan IN ('{V}', '{MS_SPACED}');",
        f"PREPARE q(text) AS SELECT id, holder FROM {t} WHERE pan = $1;",
        f"EXECUTE q('{M}');",
        f"COPY {t} (id, pan, holder, note) FROM STDIN;",
        f"6\t{MS}\tFay\tpsql copy {A_SPACED}",
        "\\.",
        f"COPY (SELECT id, pan, note FROM {t} ORDER BY id) TO STDOUT;",
        f"SELECT '{A}'::int;",
        "SELECT 'psql done';",
        ""])
    res = subprocess.run(["psql", dsn(gateway, sub), "-X"], input=script, capture_output=True, text=True,
                         timeout=60)
    out = res.stdout + res.stderr
    assert "psql done" in out, out
    assert "out of range" in out, out
    return out


def outcome_workload(gateway, t, sub="agent-outcome"):
    """The statements whose records test_outcomes_are_accurate checks, in order."""
    with psycopg.connect(dsn(gateway, sub), autocommit=True) as conn:
        assert conn.execute(f"SELECT id FROM {t} WHERE id <= 3 ORDER BY id").fetchall() == [(1,), (2,), (3,)]
        with pytest.raises(psycopg.Error) as err:
            conn.execute(f"SELECT 'card {V}'::int")
        assert err.value.sqlstate == "22P02"
        with pytest.raises(psycopg.Error) as err:
            conn.execute(f"DROP TABLE {t}")
        assert err.value.sqlstate == "42501" and "block-drop-table" in str(err.value), str(err.value)
        for _ in range(2):
            assert conn.execute(f"SELECT holder FROM {t} WHERE pan = %s", (M,), prepare=True).fetchall() == [("Bob",)]
        conn.execute(f"UPDATE {t} SET holder = 'Bobby' WHERE id = 2")
        assert conn.execute("SELECT 'outcome done'").fetchone() == ("outcome done",)


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def audit_cluster():
    base = Path(f"/tmp/hoop-e2e-audit-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    cluster = Cluster(base / "pg")
    cluster.start("log_statement = 'all'\n")
    cluster.psql("postgres", f"""
        CREATE ROLE hoop_gateway LOGIN NOINHERIT PASSWORD '{GATEWAY_PASSWORD}';
        CREATE ROLE fraud_agent NOLOGIN;
        GRANT fraud_agent TO hoop_gateway;
        CREATE ROLE hoop_audit LOGIN PASSWORD '{AUDIT_PASSWORD}';""")
    cluster.psql("postgres", "CREATE DATABASE payments")
    # The gateway's audit role owns its database and creates the schema
    # (test_postgres_store_with_insert_and_select_only covers the README's
    # least-privilege setup separately).
    cluster.psql("postgres", "CREATE DATABASE hoop_audit OWNER hoop_audit")
    cluster.psql("payments", FUNCTIONS)
    try:
        yield cluster, base
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


class Run:
    """A gateway's finished workload: its config, export and sessions."""

    def __init__(self, gateway, export_dir, client_seen):
        self.gateway = gateway
        self.config = gateway.config
        self.export = export(gateway.config, export_dir)
        self.client_seen = client_seen


def pan_run(cluster, base, name, pg_store):
    t = f"cards_{name.replace('-', '_')}"
    make_table(cluster, t)
    gateway = start_gateway(cluster, base, name, pg_store=pg_store)
    try:
        seen = [pan_workload_psycopg(gateway, t), pan_workload_psql(gateway, t)]
        outcome_workload(gateway, t)
        time.sleep(0.3)  # session ends recorded
        if not pg_store:
            # While the gateway runs, recent records sit in the WAL.
            gateway.live_scan = scan_files(store_files(gateway))
            gateway.live_bytes = b"".join(p.read_bytes() for p in store_files(gateway) if p.is_file())
    finally:
        gateway.stop()
    gateway.table = t
    return Run(gateway, base / f"{name}-export", seen)


@pytest.fixture(scope="module")
def sqlite_run(audit_cluster):
    cluster, base = audit_cluster
    return pan_run(cluster, base, "gw-sqlite", pg_store=False)


@pytest.fixture(scope="module")
def pg_run(audit_cluster):
    cluster, base = audit_cluster
    return pan_run(cluster, base, "gw-pg", pg_store=True)


# ---------------------------------------------------------------------------
# 1. No readable card number in the store (PCI DSS 3.5.1)


def test_scanner_finds_what_it_must(tmp_path):
    """The scan can fail: planted PANs in every printed form are found, and
    masked forms are not."""
    for name, pan in PANS.items():
        for form in (pan, printed(pan, " "), printed(pan, "-"), f"x{pan}y", pan[::-1],
                     pan.encode().hex(), f'{{"sql":"VALUES (\'{printed(pan, "-")}\')"}}'):
            planted = tmp_path / "planted.db"
            planted.write_bytes(b"\x00SQLite junk\x01" + form.encode() + b"\xff tail")
            hits = scan_files([planted])
            assert hits, f"scanner missed {name} printed as a {len(form)}-character form"
            assert pan not in "".join(hits), "reports never print the PAN"
        clean = masked(pan).encode() + b" " + masked(printed(pan, "-")).encode()
        assert not scan(clean), clean
        assert masked_token(pan).search(clean), clean
    assert masked(VD_DASHED) == "****-****-****-1881"
    # A PAN written through SQLite (WAL, like the store) is visible in the
    # raw bytes of the files the test scans.
    db = tmp_path / "audit.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE audit_entries(payload text)")
    conn.execute("INSERT INTO audit_entries VALUES (?)", (f'{{"sql":"INSERT … (\'{printed(A, " ")}\')"}}',))
    hits = scan_files([db, tmp_path / "audit.db-wal"])
    conn.close()
    assert hits and "…0005" in hits[0], hits


def test_sqlite_store_holds_no_card_number(sqlite_run):
    gateway = sqlite_run.gateway
    files = store_files(gateway)
    assert files[0].is_file(), "default store: audit.db next to hoop.toml"
    hits = gateway.live_scan + scan_files(files)
    assert not hits, "readable card numbers in the SQLite store:\n" + "\n".join(hits)
    # The export an auditor takes away holds none either.
    hits = scan(sqlite_run.export.files_bytes(), "export")
    assert not hits, "\n".join(hits)
    # Not vacuous: the store holds the masked forms of every test PAN (they
    # all reached result rows, recorded up to record_rows = 20).
    data = gateway.live_bytes + b"".join(p.read_bytes() for p in files if p.is_file())
    missing = [f"…{pan[-4:]}" for pan in PANS.values() if not masked_token(pan).search(data)]
    assert not missing, f"masked forms absent from the store files: {missing}"


def test_statement_records_are_masked(sqlite_run):
    check_pan_records(sqlite_run.export, sqlite_run.gateway.table)


def check_pan_records(ex: Export, t: str):
    py = ex.session(ex.session_of("agent-pan-py"))
    ps = ex.session(ex.session_of("agent-pan-psql"))
    # Every statement recorded, every one completed.
    assert len(py) >= 17, [p[0]["record"]["sql"][:60] for p in py]
    assert len(ps) >= 8, [p[0]["record"]["sql"][:60] for p in ps]
    for begin, end in py + ps:
        assert end is not None, f"statement #{begin['record']['sequence']} has no statement_end"
        assert begin["sql"] == begin["record"]["sql"], "export field `sql` is the recorded SQL"
    assert len(ex.of("statement")) == len(ex.of("statement_end"))

    # SQL literals.
    begin, end = find(py, f"INSERT INTO {t} VALUES (1,")
    assert begin["record"]["sql"] == f"INSERT INTO {t} VALUES (1, '{masked(V)}', 'Ada', 'dashed {masked(VD_DASHED)} in a note')"
    assert end["record"]["outcome"]["command_tag"] == "INSERT 0 1"
    begin, _ = find(ps, f"INSERT INTO {t} VALUES (5,")
    assert masked(VD_DASHED) in begin["record"]["sql"], begin["record"]["sql"]
    begin, _ = find(ps, "WHERE pan IN")
    assert masked(V) in begin["record"]["sql"] and masked(MS_SPACED) in begin["record"]["sql"], begin["record"]["sql"]
    begin, _ = find(ps, "EXECUTE q(")
    assert masked(M) in begin["record"]["sql"], begin["record"]["sql"]

    # Bind parameters: text ones masked; binary ones (psycopg sends ints in
    # binary, and everything with %b) are recorded as `<binary, N bytes>`,
    # never decoded (README, "What is recorded").
    begin, _ = find(py, f"INSERT INTO {t} VALUES ($1, $2, $3, $4)")
    params = begin["record"]["params"]
    assert BINARY.match(params[0]) and params[1:] == [masked(M), "Bob", f"amex {masked(A)}"], params
    begin, _ = find(py, f"INSERT INTO {t} VALUES ($1, $2, $3, $4)", nth=1)
    params = begin["record"]["params"]
    assert len(params) == 4 and all(BINARY.match(p) for p in params), params
    assert params[1] == f"<binary, {len(D)} bytes>", params
    begin, end = find(py, "::bigint::text")
    assert begin["record"]["params"] == [masked(M), "<binary, 8 bytes>"], begin["record"]["params"]
    assert end["record"]["outcome"]["result_rows"] == [[masked(M), masked(A)]], end["record"]["outcome"]
    # Prepared statement: the prepared SQL and the parameter, each execution.
    executions = [p for p in py if p[0]["record"]["sql"] == f"SELECT id, note FROM {t} WHERE pan = $1"]
    assert len(executions) == 3, [p[0]["record"]["sql"] for p in py]
    for begin, end in executions:
        assert begin["record"]["params"] == [masked(V)]
        assert end["record"]["outcome"]["command_tag"] == "SELECT 1"

    # Result rows, masked (text and binary; the bytea column's hex too).
    for nth in (0, 1):
        begin, end = find(py, "convert_to(pan, 'UTF8')", nth=nth)
        outcome = end["record"]["outcome"]
        assert outcome["command_tag"] == "SELECT 3" and outcome["rows"] == 3, outcome
        assert outcome["columns"] == ["id", "pan", "holder", "note", "raw"], outcome["columns"]
        rows = outcome["result_rows"]
        assert len(rows) == 3, rows
        assert rows[0][1] == masked(V) and rows[1][1] == masked(M) and rows[2][1] == masked(D), rows
    begin, end = find(py, f"SELECT * FROM {t} ORDER BY id")
    outcome = end["record"]["outcome"]
    assert outcome["rows"] == 4 and len(outcome["result_rows"]) == 4, outcome
    assert [r[1] for r in outcome["result_rows"]] == [masked(V), masked(M), masked(D), masked(J)]
    assert outcome["result_rows"][3][3] == f"diners {masked(DI)}"

    # COPY both ways: recorded, nothing readable (the scan covers the data).
    begin, end = find(py, f"COPY {t} (id, pan, holder, note) FROM STDIN")
    assert begin["record"]["kind"].startswith("copy"), begin["record"]["kind"]
    assert end["record"]["outcome"]["command_tag"] == "COPY 1", end["record"]["outcome"]
    begin, end = find(py, f"COPY (SELECT id, pan, holder, note FROM {t} ORDER BY id) TO STDOUT")
    assert end["record"]["outcome"]["command_tag"] == "COPY 4", end["record"]["outcome"]
    begin, end = find(ps, f"COPY {t} (id, pan, holder, note) FROM STDIN")
    assert end["record"]["outcome"]["command_tag"] == "COPY 1", end["record"]["outcome"]

    # Error messages, masked.
    expected = [(f"SELECT '{masked(V)}'::int", "22003", masked(V)),
                (f"SELECT 'card {masked(V)}'::int", "22P02", masked(V)),
                ("SELECT leak_error($1)", "P0001", masked(D))]
    for sql, state, token in expected:
        begin, end = find(py, sql)
        outcome = end["record"]["outcome"]
        assert outcome["sqlstate"] == state and outcome["command_tag"] is None, outcome
        assert token in (outcome["message"] or ""), outcome
    begin, end = find(py, f"INSERT INTO {t} VALUES ($1, $2, 'dup', NULL)")
    assert end["record"]["outcome"]["sqlstate"] == "23505", end["record"]["outcome"]
    assert BINARY.match(begin["record"]["params"][0]) and begin["record"]["params"][1] == masked(M)
    begin, end = find(ps, f"SELECT '{masked(A)}'::int")
    assert end["record"]["outcome"]["sqlstate"] == "22003"
    assert masked(A) in end["record"]["outcome"]["message"], end["record"]["outcome"]


def test_gateway_log_holds_no_card_number(sqlite_run, pg_run):
    """No raw PAN is ever written to disk by the gateway (DESIGN.md) — its
    own log included."""
    hits = scan_files([sqlite_run.gateway.dir / "hoop.log", pg_run.gateway.dir / "hoop.log"])
    assert not hits, "\n".join(hits)


# ---------------------------------------------------------------------------
# 2. Outcomes


def test_outcomes_are_accurate(sqlite_run):
    ex, t = sqlite_run.export, sqlite_run.gateway.table
    pairs = ex.session(ex.session_of("agent-outcome"))
    sqls = [b["record"]["sql"] for b, _ in pairs]
    assert len(pairs) == 7, sqls
    # Sequences 1, 2, 3 … per session; each end completes its begin.
    assert [b["record"]["sequence"] for b, _ in pairs] == list(range(1, 8)), sqls
    for begin, end in pairs:
        assert end is not None, begin["record"]
        assert end["record"]["sequence"] == begin["record"]["sequence"]
        assert end["record"]["begin_seq"] == begin["seq"]
        assert end["seq"] > begin["seq"], "the outcome is written after the statement"
        assert isinstance(end["record"]["outcome"]["duration_us"], int)
        assert begin["record"]["received_at"], begin["record"]
    for other in ("agent-pan-py", "agent-pan-psql"):
        seqs = [b["record"]["sequence"] for b, _ in ex.session(ex.session_of(other))]
        assert seqs == list(range(1, len(seqs) + 1)), (other, seqs)

    (s1, e1), (s2, e2), (s3, e3), (s4, e4), (s5, e5), (s6, e6), (s7, e7) = pairs
    assert s1["record"]["sql"] == f"SELECT id FROM {t} WHERE id <= 3 ORDER BY id"
    assert s1["record"]["kind"] == "select" and s1["record"]["tables"] == [f"public.{t}"], s1["record"]
    assert s1["record"]["decision"]["action"] == "allow"
    o = e1["record"]["outcome"]
    assert (o["command_tag"], o["rows"], o["sqlstate"]) == ("SELECT 3", 3, None), o
    assert o["columns"] == ["id"] and o["result_rows"] == [["1"], ["2"], ["3"]], o

    assert s2["record"]["sql"] == f"SELECT 'card {masked(V)}'::int"
    o = e2["record"]["outcome"]
    assert o["sqlstate"] == "22P02" and o["command_tag"] is None, o
    assert o["message"] == f'invalid input syntax for type integer: "card {masked(V)}"', o

    assert s3["record"]["sql"] == f"DROP TABLE {t}"
    decision = s3["record"]["decision"]
    assert decision["action"] == "block" and decision["rule"] == "block-drop-table", decision
    assert e3["record"]["outcome"]["sqlstate"] == "42501", e3["record"]["outcome"]
    assert "block-drop-table" in (e3["record"]["outcome"]["message"] or ""), e3["record"]["outcome"]
    assert s3["success"] is False and e3["success"] is False

    for begin, end in ((s4, e4), (s5, e5)):  # extended protocol, prepared once
        assert begin["record"]["sql"] == f"SELECT holder FROM {t} WHERE pan = $1"
        assert begin["record"]["params"] == [masked(M)]
        o = end["record"]["outcome"]
        assert (o["command_tag"], o["rows"]) == ("SELECT 1", 1), o
        assert o["result_rows"] == [["Bob"]], o

    assert s6["record"]["kind"] == "update", s6["record"]
    o = e6["record"]["outcome"]
    assert (o["command_tag"], o["rows"], o["sqlstate"]) == ("UPDATE 1", 1, None), o
    assert e6["success"] is True
    assert e7["record"]["outcome"]["result_rows"] == [["outcome done"]]


# ---------------------------------------------------------------------------
# 3. The tools


def test_verify_sessions_and_replay(sqlite_run):
    config, t = sqlite_run.config, sqlite_run.gateway.table
    res = hoop("audit", "verify", "-c", config)
    assert "OK: every chain verifies" in res.stdout, res.stdout
    assert "without outcome" not in res.stdout, res.stdout
    offline = hoop("audit", "verify", sqlite_run.export.dir)
    assert "OK: every chain verifies" in offline.stdout, offline.stdout

    listing = hoop("audit", "sessions", "-c", config, "--sub", "agent-outcome").stdout
    lines = [l for l in listing.splitlines() if "agent-outcome" in l]
    assert len(lines) == 1, listing
    fields = lines[0].split("  ")
    header = listing.splitlines()[0].split("  ")
    row = dict(zip(header, fields))
    assert (row["STATEMENTS"], row["BLOCKED"], row["FAILED"]) == ("7", "1", "2"), row

    session = sqlite_run.export.session_of("agent-outcome")
    timeline = hoop("audit", "replay", "-c", config, session).stdout
    assert not scan(timeline.encode(), "replay"), scan(timeline.encode(), "replay")
    # Statements in order, each followed by its SQL (masked) and decision.
    statements = [
        (f"SELECT id FROM {t} WHERE id <= 3 ORDER BY id", "allow"),
        (f"SELECT 'card {masked(V)}'::int", "allow"),
        (f"DROP TABLE {t}", "BLOCK (rule block-drop-table)"),
        (f"SELECT holder FROM {t} WHERE pan = $1\n    $1        '{masked(M)}'", "allow"),
        (f"SELECT holder FROM {t} WHERE pan = $1\n    $1        '{masked(M)}'", "allow"),
        (f"UPDATE {t} SET holder = 'Bobby' WHERE id = 2", "allow"),
        ("SELECT 'outcome done'", "allow"),
    ]
    at = 0
    for number, (sql, decision) in enumerate(statements, 1):
        header = timeline.find(f"\n#{number} ", at)
        assert header >= 0, f"replay: statement #{number} missing after offset {at}:\n{timeline}"
        at = header + 1
        block = timeline[at:]
        assert block.split("\n", 1)[1].startswith(f"    sql       {sql}\n"), f"#{number}:\n{block[:400]}"
        assert f"    decision  {decision}" in block.split("\n#", 1)[0], f"#{number}:\n{block[:400]}"
    # Each outcome names the statement it completes (it is written once the
    # client has its answer, so it may come after the next statement began).
    outcomes = {}
    for line in timeline.splitlines():
        m = re.match(r"    outcome   (.*)  \(#(\d+) completed\)", line)
        if m:
            outcomes[int(m.group(2))] = m.group(1)
    expected = {1: "SELECT 3, 3 rows", 2: f'ERROR 22P02: invalid input syntax for type integer: "card {masked(V)}"',
                3: 'ERROR 42501: statement blocked by gateway rule "block-drop-table"', 4: "SELECT 1, 1 rows",
                5: "SELECT 1, 1 rows", 6: "UPDATE 1, 1 rows", 7: "SELECT 1, 1 rows"}
    assert sorted(outcomes) == list(range(1, 8)), timeline
    for number, text in expected.items():
        assert outcomes[number].startswith(text), (number, outcomes[number])
    assert "\n              Bob\n" in timeline and "\n              outcome done\n" in timeline, timeline

    # psql session: statements in order, masked rows shown.
    psql_session = sqlite_run.export.session_of("agent-pan-psql")
    timeline = hoop("audit", "replay", "-c", config, psql_session).stdout
    assert not scan(timeline.encode(), "replay")
    assert timeline.find(f"'{masked(VD_DASHED)}'") < timeline.find("EXECUTE q(") < timeline.find("'psql done'"), timeline
    assert f"1 | {masked(V)}" in timeline, timeline


# ---------------------------------------------------------------------------
# 4. The Postgres store


def pg_dump(cluster, db):
    return subprocess.run(as_postgres(PG_BIN / "pg_dump", "-h", cluster.dir, "-p", cluster.port, "-d", db,
                                      "--no-owner"), capture_output=True, check=True).stdout


def test_postgres_store_holds_no_card_number(audit_cluster, pg_run):
    cluster, _ = audit_cluster
    assert not (pg_run.gateway.dir / "audit.db").exists(), "the Postgres store leaves no SQLite file"
    dump = pg_dump(cluster, "hoop_audit")
    hits = scan(dump, "pg_dump hoop_audit")
    assert not hits, "readable card numbers in the Postgres store:\n" + "\n".join(hits)
    hits = scan(pg_run.export.files_bytes(), "export")
    assert not hits, "\n".join(hits)
    missing = [f"…{pan[-4:]}" for pan in PANS.values() if not masked_token(pan).search(dump)]
    assert not missing, f"masked forms absent from the Postgres store: {missing}"
    # The database's own files too (dead tuples included).
    cluster.psql("postgres", "CHECKPOINT")
    oid = cluster.psql("postgres", "SELECT oid FROM pg_database WHERE datname = 'hoop_audit'").strip()
    files = [p for p in (cluster.data / "base" / oid).iterdir() if p.is_file()]
    hits = scan_files(files)
    assert not hits, "\n".join(hits)
    counts = dict(line.split("|") for line in cluster.psql(
        "hoop_audit", "SELECT kind, count(*) FROM audit_entries WHERE instance = 'gw-pg' "
                      "AND kind LIKE 'statement%' GROUP BY kind").split())
    assert int(counts.get("statement", 0)) >= 32, counts
    assert counts.get("statement") == counts.get("statement_end"), counts
    check_pan_records(pg_run.export, pg_run.gateway.table)
    res = hoop("audit", "verify", "-c", pg_run.config)
    assert "OK: every chain verifies" in res.stdout, res.stdout


def test_postgres_store_with_insert_and_select_only(audit_cluster):
    """README: "Give the Postgres audit role INSERT and SELECT only". With
    the schema applied by the DBA and nothing more granted, the gateway
    starts, records and verifies."""
    cluster, base = audit_cluster
    cluster.psql("postgres", "CREATE DATABASE hoop_audit_lp")
    cluster.psql("hoop_audit_lp", (ROOT / "proxy/audit/sql/postgres.sql").read_text() + """
        GRANT SELECT, INSERT ON audit_entries, audit_checkpoints TO hoop_audit;""")
    gateway = start_gateway(cluster, base, "gw-pg-lp", pg_store=True, audit_db="hoop_audit_lp")
    try:
        with psycopg.connect(dsn(gateway, "agent-lp"), autocommit=True) as conn:
            assert conn.execute("SELECT 'least privilege'").fetchone() == ("least privilege",)
    finally:
        gateway.stop()
    hoop("audit", "verify", "-c", gateway.config)
    starts = cluster.psql("hoop_audit_lp", "SELECT count(*) FROM audit_entries WHERE kind = 'session_start'")
    assert starts.strip() == "1", starts


# ---------------------------------------------------------------------------
# 5. Fail closed


def assert_refused_then_recovers(cluster, gateway, t, outage, restore, marker):
    with psycopg.connect(dsn(gateway, "agent-fc"), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {t} VALUES (1, NULL, 'before', NULL)")
        outage()
        try:
            # No new session without a record of it (FATAL 58000 at login).
            with pytest.raises(psycopg.OperationalError) as login:
                psycopg.connect(dsn(gateway, "agent-fc-late"), connect_timeout=20).close()
            assert "audit" in str(login.value).lower(), str(login.value)
            started = time.monotonic()
            with pytest.raises(psycopg.Error) as err:
                conn.execute(f"INSERT INTO {t} VALUES (99, NULL, '{marker}', NULL)")
            elapsed = time.monotonic() - started
        finally:
            restore()
        error = err.value
        # README: 58000 "the gateway cannot record this statement in its audit trail, so it was not run; …"
        assert error.sqlstate == "58000", (error.sqlstate, str(error))
        assert "audit trail" in str(error) and "not run" in str(error), str(error)
        assert elapsed < 15, f"refusal took {elapsed:.1f}s"
        # It did not run: no row, and the database never saw it.
        assert cluster.psql("payments", f"SELECT count(*) FROM {t} WHERE id = 99").strip() == "0"
        log = (cluster.dir / "log").read_text(errors="replace")
        assert not [l for l in log.splitlines() if marker in l and "statement:" in l], "the refused statement reached Postgres"
        # The store is back: the same session works again, and is recorded.
        conn.execute(f"INSERT INTO {t} VALUES (2, NULL, 'after-recovery', NULL)")
        assert conn.execute(f"SELECT count(*) FROM {t}").fetchone() == (2,)
    time.sleep(0.3)
    gateway.stop()
    res = hoop("audit", "verify", "-c", gateway.config)
    assert "OK: every chain verifies" in res.stdout and "without outcome" not in res.stdout, res.stdout
    ex = export(gateway.config, gateway.dir / "export")
    assert marker not in (ex.dir / "records.jsonl").read_text(), "the refused statement was recorded after all"
    pairs = ex.session(ex.session_of("agent-fc"))
    sqls = [b["record"]["sql"] for b, _ in pairs]
    assert any("'before'" in s for s in sqls) and any("after-recovery" in s for s in sqls), sqls
    assert all(end is not None for begin, end in pairs if "after-recovery" in begin["record"]["sql"]), sqls


@contextlib.contextmanager
def store_locked(gateway):
    """Another process holds the SQLite store's write lock (past the
    writer's timeout) while the block runs. A commit to the store's commit
    log needs no lock, and the log takes every commit while the tables take
    what it holds: the store is not down while it takes commits. So, with
    the lock taken (once the writer has moved what the log holds into the
    tables), a login's records go to the log, and the block starts once
    the writer has failed to move them into the tables (its busy timeout,
    2 s): from then on commits go to the tables, and are refused there."""
    time.sleep(0.5)
    lock = sqlite3.connect(gateway.dir / "audit.db", timeout=5, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        with psycopg.connect(dsn(gateway, "agent-store-lock"), autocommit=True):
            time.sleep(2.5)
            yield
    finally:
        lock.execute("ROLLBACK")
        lock.close()


def reached_postgres_when_refused(cluster, gateway, conn, sql, marker):
    """Runs `sql` (which holds `marker`, found nowhere else in the server
    log) while the store is locked: the client gets 58000. Returns whether
    the statement reached Postgres all the same (it ran while its record
    was written). One statement per outage: after a failed commit, later
    ones may go to the store's commit log, which needs no lock."""
    with store_locked(gateway), pytest.raises(psycopg.Error) as err:
        conn.execute(sql).fetchall()
    assert err.value.sqlstate == "58000", (err.value.sqlstate, str(err.value))
    log = (cluster.dir / "log").read_text(errors="replace")
    return bool([l for l in log.splitlines() if marker in l and "statement:" in l])


def test_fail_closed_sqlite_store_locked(audit_cluster):
    """Another process holds the SQLite write lock (busy past the writer's
    timeout): statements are refused, then run again once it lets go."""
    cluster, base = audit_cluster
    t = "fc_sqlite"
    make_table(cluster, t)
    gateway = start_gateway(cluster, base, "gw-fc-sqlite")
    holder = {}

    def outage():
        lock = sqlite3.connect(gateway.dir / "audit.db", timeout=5, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        holder["lock"] = lock

    def restore():
        lock = holder.pop("lock")
        lock.execute("ROLLBACK")
        lock.close()

    try:
        assert_refused_then_recovers(cluster, gateway, t, outage, restore, "fc-marker-sqlite")
    finally:
        gateway.stop()


def test_fail_closed_read_through_an_operator_with_side_effects(audit_cluster):
    """A plain read runs while its record is written, its answer held back;
    that is safe only if nothing it does outlasts an autocommit that the
    failed record cannot stop. `WHERE id === 1` names no function, but
    `===` may be a user-defined operator whose function writes a table. A
    session logged in before an agent created one through the gateway (over
    a function the DBA wrote), and one logged in after: with the store down, the read is refused and its
    function never runs (before, it ran and its insert committed)."""
    cluster, base = audit_cluster
    cluster.psql("payments", """
        CREATE TABLE public.hc_t (id int);
        INSERT INTO public.hc_t VALUES (1);
        CREATE TABLE public.hc_log (n int);
        GRANT SELECT ON public.hc_t TO fraud_agent;
        GRANT INSERT, SELECT ON public.hc_log TO fraud_agent;
        GRANT CREATE ON SCHEMA public TO fraud_agent;""")
    gateway = start_gateway(cluster, base, "gw-fc-hidden")
    try:
        before = psycopg.connect(dsn(gateway, "agent-hidden-before"), autocommit=True)
        assert before.execute("SELECT id FROM hc_t WHERE id = 1").fetchall() == [(1,)]
        # A function alone is no hidden code: nothing calls it unnamed.
        cluster.psql("payments", """
            CREATE FUNCTION public.hc_note(a int, b int) RETURNS bool
            LANGUAGE plpgsql AS $f$ BEGIN INSERT INTO public.hc_log VALUES (a);
            RETURN a = b; END $f$;""")
        with psycopg.connect(dsn(gateway, "agent-hidden-ddl"), autocommit=True) as ddl:
            ddl.execute("CREATE OPERATOR public.=== (LEFTARG = int, RIGHTARG = int, "
                        "FUNCTION = public.hc_note)")
        after = psycopg.connect(dsn(gateway, "agent-hidden-after"), autocommit=True)
        # The operator does what it was made for.
        assert after.execute("SELECT id FROM hc_t WHERE id === 1").fetchall() == [(1,)]
        assert cluster.psql("payments", "SELECT count(*) FROM hc_log").strip() == "1"
        with store_locked(gateway):
            for n, conn in enumerate([before, after]):
                marker = f"hc-marker-{n}"
                with pytest.raises(psycopg.Error) as err:
                    conn.execute(f"SELECT id, '{marker}' FROM hc_t WHERE id === 1").fetchall()
                assert err.value.sqlstate == "58000", (err.value.sqlstate, str(err.value))
                log = (cluster.dir / "log").read_text(errors="replace")
                assert not [l for l in log.splitlines() if marker in l and "statement:" in l], \
                    "the refused read reached Postgres"
        assert cluster.psql("payments", "SELECT count(*) FROM hc_log").strip() == "1", \
            "the operator's function ran for a read whose record failed"
        # The store is back: the reads run, and are recorded.
        assert before.execute("SELECT id FROM hc_t WHERE id === 1").fetchall() == [(1,)]
        before.close()
        after.close()
    finally:
        gateway.stop()
        cluster.psql("payments", """
            DROP OPERATOR IF EXISTS public.=== (int, int);
            DROP FUNCTION IF EXISTS public.hc_note(int, int);
            REVOKE CREATE ON SCHEMA public FROM fraud_agent;""")


def test_fail_closed_read_through_a_function_named_as_a_column(audit_cluster):
    """`SELECT t.an_bump FROM an_t t` names a column, yet calls an_bump(t)
    (attribute notation), and an_bump writes a table. The catalog reading
    finds functions that take a row: with the store down, the read is
    refused and the function never runs (before, the read ran while its
    record was written, and its insert committed)."""
    cluster, base = audit_cluster
    cluster.psql("payments", """
        CREATE TABLE public.an_t (id int);
        INSERT INTO public.an_t VALUES (1);
        CREATE TABLE public.an_log (n int);
        GRANT SELECT ON public.an_t TO fraud_agent;
        GRANT INSERT ON public.an_log TO fraud_agent;
        CREATE FUNCTION public.an_bump(t public.an_t) RETURNS int LANGUAGE plpgsql AS
            $f$ BEGIN INSERT INTO public.an_log VALUES (t.id); RETURN t.id; END $f$;""")
    gateway = start_gateway(cluster, base, "gw-fc-attribute")
    try:
        with psycopg.connect(dsn(gateway, "agent-attribute"), autocommit=True) as conn:
            marker = "an-marker"
            assert not reached_postgres_when_refused(
                cluster, gateway, conn, f"SELECT t.an_bump, '{marker}' FROM an_t t", marker), \
                "the refused read reached Postgres"
        assert cluster.psql("payments", "SELECT count(*) FROM an_log").strip() == "0", \
            "the function ran for a read whose record failed"
        # The store is back: the read calls the function, as it did not then.
        with psycopg.connect(dsn(gateway, "agent-attribute-again"), autocommit=True) as conn:
            assert conn.execute("SELECT t.an_bump FROM an_t t").fetchall() == [(1,)]
        assert cluster.psql("payments", "SELECT count(*) FROM an_log").strip() == "1"
    finally:
        gateway.stop()
        cluster.psql("payments", "DROP FUNCTION IF EXISTS public.an_bump(public.an_t)")


def test_calls_of_builtin_functions_leave_early_runs_alone(audit_cluster):
    """A read calling built-in functions (`count`, `lower`) creates no code
    and changes nothing: it runs while its record is written, and the
    database's other sessions go on doing so (before, any function call
    stopped that in every session of the database until it logged in
    again). A call that may reach a user-written function of the same name
    (`upper(int)` here) is recorded before it is sent: with the store down,
    it never runs. Each read runs early or not as the server log shows."""
    cluster, base = audit_cluster
    cluster.psql("payments", """
        CREATE TABLE public.bf_t (id int, name text);
        INSERT INTO public.bf_t VALUES (1, 'A');
        CREATE TABLE public.bf_log (n int);
        GRANT SELECT ON public.bf_t TO fraud_agent;
        GRANT INSERT, SELECT ON public.bf_log TO fraud_agent;
        CREATE FUNCTION public.upper(n int) RETURNS int LANGUAGE plpgsql AS
            $f$ BEGIN INSERT INTO public.bf_log VALUES (n); RETURN n; END $f$;""")
    gateway = start_gateway(cluster, base, "gw-builtin-calls")
    try:
        caller, reader, user_fn = (
            psycopg.connect(dsn(gateway, f"agent-bf-{n}"), autocommit=True)
            for n in ("caller", "reader", "user-fn"))
        assert caller.execute("SELECT count(*), lower(min(name)) FROM bf_t").fetchall() == [(1, "a")]

        def refused(conn, sql, marker):
            """Whether `sql`, refused while the store is locked, reached
            Postgres (ran early)."""
            return reached_postgres_when_refused(
                cluster, gateway, conn, sql.format(marker=marker), marker)

        assert refused(reader, "SELECT id, '{marker}' FROM bf_t WHERE id = 1", "bf-read"), \
            "a plain read stopped running early after another session called count()"
        assert refused(caller, "SELECT count(*), '{marker}' FROM bf_t", "bf-count"), \
            "a read calling count() did not run early"
        assert not refused(user_fn, "SELECT upper(id), '{marker}' FROM bf_t", "bf-upper"), \
            "a call that may reach a user-written function ran before its record"
        assert cluster.psql("payments", "SELECT count(*) FROM bf_log").strip() == "0", \
            "the user-written function ran for a statement whose record failed"
        # The store is back: the call reaches the function, as it did not
        # then.
        with psycopg.connect(dsn(gateway, "agent-bf-again"), autocommit=True) as again:
            assert again.execute("SELECT upper(id) FROM bf_t").fetchall() == [(1,)]
        assert cluster.psql("payments", "SELECT count(*) FROM bf_log").strip() == "1"
        for conn in (caller, reader, user_fn):
            conn.close()
    finally:
        gateway.stop()
        cluster.psql("payments", "DROP FUNCTION IF EXISTS public.upper(int)")


def test_fail_closed_call_of_a_function_created_outside_the_gateway(audit_cluster):
    """A DBA creates a function directly in Postgres after a session's login,
    so the session's catalog reading does not list it. Its name is no
    built-in function's, so a read calling it is recorded before it is sent
    (before, a name missing from the reading was taken for a built-in
    function's and the read ran while its record was written): with the
    store down it never runs, and the write the function makes never
    commits."""
    cluster, base = audit_cluster
    cluster.psql("payments", """
        CREATE TABLE public.ol_t (id int);
        INSERT INTO public.ol_t VALUES (1);
        CREATE TABLE public.ol_log (n int);
        GRANT SELECT ON public.ol_t TO fraud_agent;
        GRANT INSERT, SELECT ON public.ol_log TO fraud_agent;""")
    gateway = start_gateway(cluster, base, "gw-outside-fn")
    try:
        with psycopg.connect(dsn(gateway, "agent-ol"), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM ol_t").fetchall() == [(1,)]
            cluster.psql("payments", """
                CREATE FUNCTION public.ol_bump(n int) RETURNS int LANGUAGE plpgsql AS
                    $f$ BEGIN INSERT INTO public.ol_log VALUES (n); RETURN n; END $f$;""")
            marker = "ol-outside-fn"
            assert not reached_postgres_when_refused(
                cluster, gateway, conn, f"SELECT ol_bump(id), '{marker}' FROM ol_t", marker), \
                "a call of a function created outside the gateway ran before its record"
            assert cluster.psql("payments", "SELECT count(*) FROM ol_log").strip() == "0", \
                "the function's write committed for a statement whose record failed"
        # The store is back: the call reaches the function.
        with psycopg.connect(dsn(gateway, "agent-ol-again"), autocommit=True) as again:
            assert again.execute("SELECT ol_bump(id) FROM ol_t").fetchall() == [(1,)]
        assert cluster.psql("payments", "SELECT count(*) FROM ol_log").strip() == "1"
    finally:
        gateway.stop()
        cluster.psql("payments", "DROP FUNCTION IF EXISTS public.ol_bump(int)")


def test_the_catalog_reading_finds_code_a_statement_runs_unnamed(audit_cluster):
    """The query the gateway runs at login (proxy/src/relay/hidden_code.sql)
    against a scratch database, object by object: what leads a statement
    that names no function to a volatile or user-written one is found;
    plain tables, built-in defaults, extensions and functions nothing calls
    unnamed are not."""
    cluster, _ = audit_cluster
    query = (ROOT / "proxy/src/relay/hidden_code.sql").read_text()
    cluster.psql("postgres", "DROP DATABASE IF EXISTS hidden_code")
    cluster.psql("postgres", "CREATE DATABASE hidden_code")

    def reading():
        found, *lists = cluster.psql("hidden_code", query).strip().split("|")
        return ({"t": True, "f": False}[found], *(set(json.loads(names)) for names in lists))

    def found():
        return reading()[0]

    # The names calls are weighed by: functions not built in, and built-in
    # ones that run SQL text; volatile built-in ones apart; every built-in
    # one.
    _, creating_code, volatile, builtin = reading()
    assert {"query_to_xml", "table_to_xml", "ts_rewrite"} <= creating_code
    assert not {"count", "lower", "now", "nextval"} & creating_code
    assert {"nextval", "random", "pg_advisory_lock", "set_config"} <= volatile
    assert not {"count", "lower", "now"} & volatile
    assert {"count", "lower", "now", "nextval", "query_to_xml"} <= builtin
    assert len(builtin) > 1000
    assert not found()
    for sql, expected, undo in [
        ("""CREATE TABLE a (id serial PRIMARY KEY, v int DEFAULT 3 CHECK (v > 0),
                           at timestamptz DEFAULT now(), r float8 DEFAULT random(),
                           u uuid DEFAULT gen_random_uuid());
            CREATE TABLE b (id int GENERATED ALWAYS AS IDENTITY, n numeric);
            CREATE VIEW va AS SELECT id, abs(v), count(*) OVER () FROM a;
            CREATE EXTENSION pg_stat_statements;
            CREATE FUNCTION note(x int, y int) RETURNS bool LANGUAGE plpgsql AS
                $f$ BEGIN INSERT INTO a (v) VALUES (x); RETURN x = y; END $f$;
            CREATE FUNCTION pos(int) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT $1 > 0';
            CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS
                $f$ BEGIN RETURN NEW; END $f$;
            CREATE OPERATOR ==== (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq)""",
         False, None),
        ("CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = note)", True,
         "DROP OPERATOR === (int, int)"),
        ("CREATE VIEW vb AS SELECT nextval('a_id_seq')", True, "DROP VIEW vb"),
        ("CREATE VIEW vc AS SELECT pg_try_advisory_lock(1)", True, "DROP VIEW vc"),
        ("CREATE VIEW vd AS SELECT note(1, 2)", True, "DROP VIEW vd"),
        ("CREATE DOMAIN pd AS int CHECK (pos(VALUE))", True, "DROP DOMAIN pd"),
        ("ALTER TABLE b ADD CONSTRAINT positive CHECK (pos(id))", True,
         "ALTER TABLE b DROP CONSTRAINT positive"),
        ("ALTER TABLE b ALTER COLUMN n SET DEFAULT pos(1)::int", True,
         "ALTER TABLE b ALTER COLUMN n DROP DEFAULT"),
        ("CREATE POLICY p ON a USING (pos(v))", True, "DROP POLICY p ON a"),
        ("CREATE TRIGGER tr BEFORE INSERT ON a FOR EACH ROW EXECUTE FUNCTION trg()", True,
         "DROP TRIGGER tr ON a"),
        ("CREATE INDEX ia ON a (abs(v))", False, "DROP INDEX ia"),
        ("CREATE INDEX ib ON a ((pos(v)))", True, "DROP INDEX ib"),
        ("CREATE INDEX ic ON a (v) WHERE pos(v)", True, "DROP INDEX ic"),
        ("CREATE TABLE pt (v int) PARTITION BY LIST ((pos(v)))", True, "DROP TABLE pt"),
        # `SELECT a.twice FROM a` calls twice(a) (attribute notation).
        ("CREATE FUNCTION twice(a) RETURNS int LANGUAGE sql AS 'SELECT 2 * $1.v'", True,
         "DROP FUNCTION twice(a)"),
        ("CREATE FUNCTION any_twice(anyelement, n int DEFAULT 2) RETURNS int LANGUAGE sql "
         "AS 'SELECT $2'", True, "DROP FUNCTION any_twice(anyelement, int)"),
    ]:
        cluster.psql("hidden_code", sql)
        assert found() == expected, sql
        if undo:
            cluster.psql("hidden_code", undo)
            assert not found(), undo
    # A user-defined cast over a user-written function (a type of our own:
    # casts between built-in types may not be redefined).
    cluster.psql("hidden_code", """
        CREATE TYPE pair AS (a int, b int);
        CREATE FUNCTION pair_sum(pair) RETURNS int LANGUAGE sql AS 'SELECT $1.a + $1.b';
        CREATE CAST (pair AS int) WITH FUNCTION pair_sum(pair)""")
    assert found()
    assert {"note", "pos", "trg", "pair_sum"} <= reading()[1]


def run_and_kill(cluster, base, name, t):
    """Eight clients read and write `t` through a busy gateway (SQLite
    store), which is killed (SIGKILL) after 2 s. Returns the gateway and
    the tags of every statement a client received an answer for."""
    import threading

    make_table(cluster, t)
    cluster.psql("payments", f"INSERT INTO {t} VALUES (1, NULL, 'seen', NULL)")
    gateway = start_gateway(cluster, base, name)
    stop = threading.Event()
    received = [[] for _ in range(8)]
    errors = []

    def client(n):
        try:
            conn = psycopg.connect(dsn(gateway, f"agent-crash-{n}"), autocommit=True)
        except psycopg.Error as e:
            errors.append(f"client {n} could not log in: {e}")
            return
        i = 0
        while not stop.is_set():
            i += 1
            tag = f"c{n}q{i}"
            try:
                if i % 4 == 0:
                    conn.execute(f"UPDATE {t} SET note = '{tag}' WHERE id = 1")
                else:
                    rows = conn.execute(f"SELECT holder, '{tag}' FROM {t} WHERE id = 1").fetchall()
                    assert rows == [("seen", tag)], rows
            except psycopg.OperationalError:
                return  # the gateway is gone
            received[n].append(tag)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    gateway.proc.kill()
    gateway.proc.wait()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    answered = [tag for tags in received for tag in tags]
    assert len(answered) > 200, f"the run did almost nothing ({len(answered)} answers)"
    return gateway, answered


def test_a_killed_gateway_loses_no_answered_statement(audit_cluster):
    """Eight clients read and write through a busy gateway (SQLite store),
    which is killed (SIGKILL) mid-run. A busy gateway makes its records
    durable in its commit log first; they reach the SQLite tables tens of
    ms later. Once the gateway has started again, every statement a
    client received an answer for has its record, and every chain
    verifies (the statements cut off by the kill have no outcome)."""
    cluster, base = audit_cluster
    gateway, answered = run_and_kill(cluster, base, "gw-crash", "crash_t")

    def statement_payloads():
        db = sqlite3.connect(gateway.dir / "audit.db")
        try:
            return [p for (p,) in db.execute("SELECT payload FROM audit_entries WHERE kind = 'statement'")]
        finally:
            db.close()

    before = len(statement_payloads())
    gateway.start()  # moves what the commit log holds into the tables
    gateway.stop()
    recorded = "\n".join(statement_payloads())
    print(f"{len(answered)} answers; statement records in the tables at the kill: {before}, "
          f"after the restart: {recorded.count(chr(10)) + 1}")
    missing = [tag for tag in answered if f"'{tag}'" not in recorded]
    assert not missing, f"{len(missing)} of {len(answered)} answers have no record: {missing[:10]}"
    res = hoop("audit", "verify", "-c", gateway.config, check=False)
    assert "OK: every chain verifies" in res.stdout, res.stdout + res.stderr


def test_records_of_a_killed_gateway_are_read_before_it_starts_again(audit_cluster):
    """The same kill; before the gateway starts again (its commit log
    still holds records the tables lack), `hoop audit export` and
    `verify` read them with the tables: every answered statement is
    exported, and the chain verifies."""
    cluster, base = audit_cluster
    gateway, answered = run_and_kill(cluster, base, "gw-crash-read", "crash_read_t")
    ex = export(gateway.config, gateway.dir / "export")
    recorded = "\n".join(l["record"]["sql"] for l in ex.of("statement"))
    missing = [tag for tag in answered if f"'{tag}'" not in recorded]
    assert not missing, f"{len(missing)} of {len(answered)} answers have no exported record: {missing[:10]}"
    res = hoop("audit", "verify", "-c", gateway.config, check=False)
    assert "OK: every chain verifies" in res.stdout, res.stdout + res.stderr
    # Reading moved nothing: the tables still lack what the log holds,
    # until the gateway starts again, and then nothing is there twice.
    gateway.start()
    gateway.stop()
    again = export(gateway.config, gateway.dir / "export-after")
    seqs = [(l["instance"], l["seq"]) for l in again.lines]
    assert len(seqs) == len(set(seqs))
    assert {(l["instance"], l["seq"]) for l in ex.lines} <= set(seqs)


def test_fail_closed_postgres_store_down(audit_cluster):
    """The audit database refuses the gateway (role cannot log in, its
    connection terminated): statements are refused, then run again."""
    cluster, base = audit_cluster
    t = "fc_pg"
    make_table(cluster, t)
    gateway = start_gateway(cluster, base, "gw-fc-pg", pg_store=True)

    def outage():
        cluster.psql("postgres", "ALTER ROLE hoop_audit NOLOGIN")
        cluster.psql("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'hoop_audit'")

    def restore():
        cluster.psql("postgres", "ALTER ROLE hoop_audit LOGIN")

    try:
        assert_refused_then_recovers(cluster, gateway, t, outage, restore, "fc-marker-pg")
    finally:
        restore()
        gateway.stop()
