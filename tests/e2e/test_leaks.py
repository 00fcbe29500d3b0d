"""Leak corpus and prohibited statements through the gateway (issue 5).

Two stacks: Postgres 15 with the hoop extension and `card_number` declared
with hoop_mask ("ext"), and one without the extension ("plain", where only
the gateway's content detection masks). Every byte the gateway sends a
client is recorded by a TCP tap in front of it; no raw test PAN may appear
in it, whatever the client (psql, psycopg text and binary, asyncpg binary)
or the way the PAN is dressed up. Prohibited statements, however disguised,
are refused with 42501 naming a rule (or held for review and, undecided,
expire with 57014); the server's statement log shows
nothing of them reached Postgres; the table survives; the connection stays
usable."""
import asyncio
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path

import asyncpg
import psycopg
import pytest

from conftest import GATEWAY_PASSWORD, HOOP_BIN, PG_BIN, Cluster, Gateway, run
from test_extension import MAPPINGS, extension_installed

PAN = "4111111111111111"          # card_number (declared in the ext stack)
NOTE_PAN = "5555555555554444"     # in `note`, declared nowhere
RAW = [PAN.encode(), NOTE_PAN.encode(), b"4111 1111 1111 1111", b"5555-5555-5555-4444"]
# NOTE_PAN in the forms of issue 16 items 1 and 5, as they would cross the
# wire: binary int8, money cents, float8, numeric's base-10000 digits,
# full-width digits, and the printed forms.
RAW += [
    struct.pack(">q", int(NOTE_PAN)),
    struct.pack(">q", int(NOTE_PAN) * 100),
    struct.pack(">d", float(NOTE_PAN)),
    struct.pack(">hhhh", 5555, 5555, 5555, 4444),
    NOTE_PAN.translate(str.maketrans("0123456789", "０１２３４５６７８９")).encode(),
] + [sep.join(["5555", "5555", "5555", "4444"]).encode()
     for sep in ["_", ".", "/", "\t", "\u00a0", "  ", " - "]] + [
    b"5555555555554444.00", b"5.555555555554444e+15", b"5,555,555,555,554,444",
]

BOUND = "amount <= 10000"  # reads of payments without it need review (shipped rule)

# The note's card number (declared nowhere) in every form issue 16 lists:
# (select expression, what a client decodes when it is masked; None: text
# whose digits end in 4444).
NOTE_NUMBER = "split_part(note, ' ', 3)"


def grouped(sep):
    return f"concat_ws({sep}, " + ", ".join(f"substr({NOTE_NUMBER}, {i}, 4)" for i in (1, 5, 9, 13)) + ")"


FORMS = [
    (f"{NOTE_NUMBER}::bigint", 4444),
    (f"({NOTE_NUMBER})::numeric(20,2)", "4444.00"),
    (f"{NOTE_NUMBER}::float8", 4444.0),
    (f"ARRAY[{NOTE_NUMBER}::bigint, 7]", [4444, 7]),
    (f"ARRAY[{NOTE_NUMBER}::numeric(20,2)]", ["4444.00"]),
    (f"jsonb_build_object('n', {NOTE_NUMBER}::bigint)", None),
    (f"json_build_object('n', {NOTE_NUMBER}::numeric)", None),
    (f"int8range({NOTE_NUMBER}::bigint, NULL)", None),
    (f"ROW(id, {NOTE_NUMBER}::bigint)", None),
    (grouped("'_'"), None),
    (grouped("'.'"), None),
    (grouped("'/'"), None),
    (grouped("E'\\t'"), None),
    (grouped("chr(160)"), None),
    (grouped("'  '"), None),
    (grouped("' - '"), None),
    (grouped("chr(8203)"), None),
    (f"translate({NOTE_NUMBER}, '0123456789', '０１２３４５６７８９')", None),
    (f"'+' || {NOTE_NUMBER}", None),
    (f"{NOTE_NUMBER} || '.00'", None),
    (f"to_char({NOTE_NUMBER}::numeric, 'FM9,999,999,999,999,999')", None),
    (f"({NOTE_NUMBER}::float8)::text", None),
]
FORMS_SQL = "SELECT " + ", ".join(expr for expr, _ in FORMS) + f" FROM payments WHERE id = 1 AND {BOUND}"
# Errors whose message or DETAIL echoes a decimal form.
FORM_ERRORS = [f"SELECT ({NOTE_NUMBER} || '.00')::int4 FROM payments WHERE id = 1 AND {BOUND}"]
# The server reports application_name to the client (ParameterStatus).
SET_APPLICATION_NAME = (f"SELECT set_config('application_name', {NOTE_NUMBER}, false) IS NOT NULL "
                        f"FROM payments WHERE id = 1 AND {BOUND}")
FORMS_COPY = (f"COPY (SELECT id, {NOTE_NUMBER}::bigint, ({NOTE_NUMBER})::numeric(20,2), ARRAY[{NOTE_NUMBER}::bigint], "
              f"ROW(id, {NOTE_NUMBER}::bigint), {grouped(chr(39) + '_' + chr(39))}, {NOTE_NUMBER}::float8 "
              f"FROM payments WHERE {BOUND}) TO STDOUT")


def digits_of(value):
    return "".join(c for c in str(value) if c.isdigit() or "０" <= c <= "９")


def assert_forms_decoded(row, where):
    """Every masked form still decodes as its type; numbers are the last
    four digits, text keeps them."""
    assert len(row) == len(FORMS), (where, row)
    for (expr, expected), value in zip(FORMS, row):
        if expected is None:
            assert "4444" in digits_of(value) or "４４４４" in digits_of(value), (where, expr, value)
            assert NOTE_PAN not in digits_of(value), (where, expr, value)
        elif isinstance(expected, list):
            assert [str(v) for v in value] == [str(e) for e in expected], (where, expr, value)
        else:
            assert str(value) == str(expected), (where, expr, value)

# A rule of our own on top of the shipped defaults.
RULES = """
[[rules]]
name = "block-drop-table"
action = "block"
kinds = ["ddl_drop_table"]
"""


# Each returns the PAN in some disguise: (sql, only the extension can stop
# it). The extension-only ones run against the "ext" stack only; the README
# lists them as what the gateway alone cannot see.
ALL_CORPUS = [
    (f"SELECT card_number FROM payments WHERE {BOUND}", False),
    (f"SELECT card_number::varchar(40), card_number::char(16), upper(card_number) FROM payments WHERE {BOUND}", False),
    (f"SELECT 'card:' || card_number || ':end', card_number || ' ok' FROM payments WHERE {BOUND}", False),
    # Digits glued to the PAN make a longer number that is no card number.
    (f"SELECT concat(id, card_number) FROM payments WHERE {BOUND}", True),
    (f"SELECT card_number::bytea, convert_to(card_number, 'UTF8') FROM payments WHERE {BOUND}", False),
    (f"SELECT row_to_json(p), to_jsonb(p) FROM payments p WHERE {BOUND}", False),
    (f"SELECT json_agg(card_number), array_agg(card_number), string_agg(card_number, ',') FROM payments WHERE {BOUND}", False),
    (f"SELECT ARRAY[card_number, note], (card_number, id), jsonb_build_object('c', card_number) FROM payments WHERE {BOUND}", False),
    (f"SELECT encode(card_number::bytea, 'escape'), format('%s', card_number) FROM payments WHERE {BOUND}", False),
    (f"SELECT note, cardholder FROM payments WHERE {BOUND}", False),
    (f"SELECT reverse(card_number), translate(card_number, '0123456789', 'abcdefghij') FROM payments WHERE {BOUND}", True),
    (f"SELECT encode(convert_to(card_number, 'UTF8'), 'base64') FROM payments WHERE {BOUND}", True),
    (f"SELECT substr(card_number, 1, 8), substr(card_number, 9) FROM payments WHERE {BOUND}", True),
    (f"SELECT leak_notice(card_number) FROM payments WHERE {BOUND}", False),
    (f"SELECT pg_notify('leaks', card_number) FROM payments WHERE {BOUND}", False),
    (f"SELECT pg_notify('leaks', note) FROM payments WHERE {BOUND}", False),
    (f"NOTIFY leaks, '{NOTE_PAN}'", False),
]


def corpus(mode):
    return [(sql, ext_only) for sql, ext_only in ALL_CORPUS if mode == "ext" or not ext_only]


ERRORS = [
    f"SELECT card_number::int FROM payments WHERE {BOUND}",
    f"SELECT note::numeric::int FROM payments WHERE {BOUND}",
    f"SELECT leak_error(card_number) FROM payments WHERE {BOUND}",
    f"SELECT leak_error(note) FROM payments WHERE {BOUND}",
]
COPY = f"COPY (SELECT id, card_number, note FROM payments WHERE {BOUND}) TO STDOUT"

# (sql, rule named in the refusal) — each carries a marker that must never
# show up in the server's statement log. A `review-` rule holds the statement
# instead; nobody decides, so it ends with 57014 "review expired" after the
# gateway's short expiry.
PROHIBITED = [
    # What PostgreSQL's grammar rejects gets the server's own answer (42601),
    # from the gateway: it never reaches the server either.
    ("DR/**/OP TABLE payments /*hoopmark01*/", "syntax-error"),
    ("DROP /* a /* nested */ b */ TABLE payments /*hoopmark02*/", "block-drop-table"),
    ("dRoP TaBlE \"payments\" /*hoopmark03*/", "block-drop-table"),
    ("DO $x$ BEGIN EXECUTE 'DROP TABLE payments'; END $x$ /*hoopmark04*/", "review-dynamic-sql"),
    ("SELECT set_config('role', 'postgres', false) /*hoopmark05*/", "block-protected-parameters"),
    ("SELECT set_config(E'rol\\x65', 'postgres', false) /*hoopmark06*/", "block-protected-parameters"),
    ("SET ROLE \"postgres\" /*hoopmark07*/", "block-identity-change"),
    ("COPY payments TO PROGRAM 'cat > /tmp/hoop-leak' /*hoopmark08*/", "block-server-side-copy"),
    ("COPY payments FROM '/etc/passwd' /*hoopmark09*/", "block-server-side-copy"),
    ("SELECT 1; DROP TABLE payments /*hoopmark10*/", "block-drop-table"),
    ("PREPARE p AS SELECT pg_read_file('/etc/passwd') /*hoopmark11*/", "block-file-access-functions"),
    ("SELECT pg_catalog.\"pg_read_file\"(U&'/etc/passwd') /*hoopmark12*/", "block-file-access-functions"),
    ("AlTeR SyStEm SET work_mem = '1MB' /*hoopmark13*/", "block-alter-system"),
    ("CREATE EXTENSION IF NOT EXISTS dblink /*hoopmark14*/", "block-create-extension"),
]


class Tap:
    """A TCP forwarder in front of the gateway that keeps every byte sent
    to the client."""

    def __init__(self, target_port):
        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record:
                    with self.lock:
                        self.received += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self):
        with self.lock:
            data = bytes(self.received)
            self.received.clear()
        return data

    def close(self):
        self.server.close()


def setup_sql(with_extension):
    return f"""
        {"CREATE EXTENSION hoop;" if with_extension else ""}
        CREATE TABLE public.payments(id bigint, card_number text, cardholder text, amount numeric(12,2),
                                     note text, created_at timestamptz);
        INSERT INTO public.payments VALUES (1, '{PAN}', 'Ada', 10.00, 'refund to {NOTE_PAN} requested', now()),
                                           (2, '{PAN}', 'Bob', 20000.00, NULL, now());
        GRANT SELECT ON public.payments TO fraud_agent, payments_admin;
        CREATE FUNCTION public.leak_notice(t text) RETURNS text LANGUAGE plpgsql AS
            $f$ BEGIN RAISE NOTICE 'value % seen', t USING DETAIL = t, HINT = 'hint ' || t; RETURN 'ok'; END $f$;
        CREATE FUNCTION public.leak_error(t text) RETURNS text LANGUAGE plpgsql AS
            $f$ BEGIN RAISE EXCEPTION 'bad value %', t USING DETAIL = t; END $f$;
        GRANT EXECUTE ON FUNCTION public.leak_notice(text), public.leak_error(text) TO PUBLIC;"""


@pytest.fixture(scope="module", params=["ext", "plain"])
def leak_stack(request):
    with_extension = request.param == "ext"
    if with_extension:
        assert extension_installed(), "the hoop extension is not installed in Postgres 15 (tests/run.sh installs it)"
    base = Path(f"/tmp/hoop-e2e-leak-{request.param}-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    conf = "log_statement = 'all'\nlog_min_error_statement = 'panic'\n"
    session_key = None
    if with_extension:
        keys = base / "keys"
        printed = run([str(HOOP_BIN), "keys", "generate", "--out", str(keys), "--kid", "e2e-1"])
        trusted = re.search(r"hoop.trusted_keys = '([^']+)'", printed).group(1)
        conf += f"shared_preload_libraries = 'hoop'\nhoop.trusted_keys = '{trusted}'\n"
        session_key = keys / "session-signing.key"
    cluster = Cluster(base / "pg")
    cluster.start(conf)
    cluster.psql("postgres", f"""
        CREATE ROLE hoop_gateway LOGIN NOINHERIT PASSWORD '{GATEWAY_PASSWORD}';
        CREATE ROLE fraud_agent NOLOGIN; CREATE ROLE payments_admin NOLOGIN;
        GRANT fraud_agent, payments_admin TO hoop_gateway;""")
    cluster.psql("postgres", "CREATE DATABASE payments")
    cluster.psql("payments", setup_sql(with_extension))
    if with_extension:
        cluster.psql("payments", "SELECT hoop_mask('public.payments'::regclass, 'card_number', 'pan_last4')")
    gateway = Gateway(cluster, base / "gw", mappings=MAPPINGS + RULES, session_key=session_key,
                      extra_config='[reviews]\nexpiry = "1s"\n')
    gateway.start()
    tap = Tap(gateway.port)
    try:
        yield request.param, cluster, gateway, tap
    finally:
        tap.close()
        gateway.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def dsn(gateway, tap, group="fraud-agents"):
    return (f"host=127.0.0.1 port={tap.port} dbname=payments user=agent-leak "
            f"password={gateway.token(sub='agent-leak', group=group)}")


def assert_clean(data: bytes, where: str, mode=None, extension_only=False):
    for raw in RAW:
        at = data.find(raw)
        assert at < 0, f"{where}: raw PAN {raw!r} reached the client: ...{data[max(0, at - 300):at + 60]!r}"
    if mode == "ext":
        # With the extension, even transformations of the declared column are masked.
        for transformed in (PAN[::-1].encode(), b"ebbbbbbbbbbbbbbb"):
            assert transformed not in data, f"{where}: transformed PAN {transformed!r} reached the client"


def test_psql_corpus(leak_stack):
    mode, _, gateway, tap = leak_stack
    script = ["\\set ON_ERROR_STOP 0", "LISTEN leaks;"]
    script += [sql + ";" for sql, _ in corpus(mode)] + [sql + ";" for sql in ERRORS]
    script += [COPY + ";", "BEGIN;", f"DECLARE c CURSOR FOR SELECT card_number, note FROM payments WHERE {BOUND};",
               "FETCH ALL FROM c;", f"DECLARE b BINARY CURSOR FOR SELECT card_number, note FROM payments WHERE {BOUND};",
               "FETCH ALL FROM b;", "COMMIT;",
               f"PREPARE leak AS SELECT card_number, note FROM payments WHERE {BOUND};", "EXECUTE leak;",
               FORMS_SQL + ";", FORMS_COPY + ";", SET_APPLICATION_NAME + ";", "SHOW application_name;"]
    script += [sql + ";" for sql in FORM_ERRORS] + ["SELECT 'done';"]
    tap.take()
    res = subprocess.run(["psql", dsn(gateway, tap), "-X", "-v", "VERBOSITY=verbose"], input="\n".join(script),
                         capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    assert "done" in out, out
    assert "1111" in out and "4444" in out, "masked values keep the last four digits"
    assert_clean(out.encode(), "psql output", mode)
    wire = tap.take()
    assert b"1111" in wire, "the tap saw the results"
    assert_clean(wire, "psql wire bytes", mode)


@pytest.mark.parametrize("binary", [False, True])
def test_psycopg_corpus(leak_stack, binary):
    mode, _, gateway, tap = leak_stack
    tap.take()
    seen = []
    with psycopg.connect(dsn(gateway, tap), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: seen.append((d.message_primary, d.message_detail, d.message_hint)))
        conn.execute("LISTEN leaks")
        for sql, _ in corpus(mode):
            with conn.cursor(binary=binary) as cur:
                cur.execute(sql)
                if cur.description:
                    seen.append(repr(cur.fetchall()))
        for sql in ERRORS:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(sql)
            seen.append((str(err.value), err.value.diag.message_detail))
        seen.extend((n.channel, n.payload) for n in conn.notifies(timeout=1, stop_after=3))
        with conn.cursor(binary=binary) as cur:
            with cur.copy(COPY) as copy:
                seen.append(b"".join(bytes(c) for c in copy))
            # Prepared statement (server-side), executed repeatedly.
            for _ in range(6):
                seen.append(repr(conn.execute(f"SELECT card_number, note FROM payments WHERE id = %s AND {BOUND}",
                                              (1,), prepare=True, binary=binary).fetchall()))
        # Issue 16 items 1 and 5, issue 13 item 6: every form, decoded by
        # psycopg in the requested format, masked and valid for its type.
        with conn.cursor(binary=binary) as cur:
            row = cur.execute(FORMS_SQL).fetchone()
            seen.append(repr(row))
            assert_forms_decoded(row, f"psycopg binary={binary}")
            for fmt in ("text", "binary"):
                with cur.copy(f"{FORMS_COPY} (FORMAT {fmt})") as copy:
                    seen.append(b"".join(bytes(c) for c in copy))
        for sql in FORM_ERRORS:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(sql)
            seen.append((str(err.value), err.value.diag.message_detail))
        if mode == "ext":
            # The extension refuses a computed application_name in gateway
            # sessions (pg_stat_activity shows it to every role).
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="application_name"):
                conn.execute(SET_APPLICATION_NAME)
        else:
            conn.execute(SET_APPLICATION_NAME)
            assert conn.info.parameter_status("application_name").endswith("4444")
        seen.append(conn.info.parameter_status("application_name"))
        with conn.transaction():
            with conn.cursor("leak_cursor", binary=binary) as named:  # server-side cursor
                named.execute(f"SELECT card_number, note FROM payments WHERE {BOUND}")
                seen.append(repr(named.fetchall()))
        assert conn.execute("SELECT 'still usable'").fetchone() == ("still usable",)
    flat = repr(seen).encode()
    assert b"1111" in flat
    assert_clean(flat, "psycopg values", mode)
    wire = tap.take()
    assert b"1111" in wire, "the tap saw the results"
    assert_clean(wire, "psycopg wire bytes", mode)


def test_asyncpg_binary_corpus(leak_stack):
    mode, _, gateway, tap = leak_stack
    tap.take()
    seen = []

    async def go():
        conn = await asyncpg.connect(host="127.0.0.1", port=tap.port, user="agent-leak",
                                     password=gateway.token(sub="agent-leak"), database="payments")
        conn.add_log_listener(lambda c, m: seen.append((m.message, m.detail, m.hint)))
        await conn.add_listener("leaks", lambda *args: seen.append(args))
        for sql, _ in corpus(mode):
            if sql.startswith("SELECT"):
                try:
                    seen.append([tuple(r) for r in await conn.fetch(sql)])
                except asyncpg.exceptions.UnsupportedClientFeatureError:
                    pass  # types asyncpg cannot decode in binary (records of text)
            else:
                await conn.execute(sql)
        for sql in ERRORS:
            try:
                await conn.fetch(sql)
            except asyncpg.PostgresError as e:
                seen.append((str(e), e.detail))
        row = await conn.fetchrow(FORMS_SQL)
        seen.append(tuple(row))
        assert_forms_decoded(tuple(row), "asyncpg")
        for sql in FORM_ERRORS:
            try:
                await conn.fetch(sql)
            except asyncpg.PostgresError as e:
                seen.append((str(e), e.detail))
        if mode == "ext":
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="application_name"):
                await conn.fetch(SET_APPLICATION_NAME)
        else:
            await conn.fetch(SET_APPLICATION_NAME)
            assert conn.get_settings().application_name.endswith("4444")
        seen.append(conn.get_settings().application_name)
        stmt = await conn.prepare(f"SELECT card_number, note FROM payments WHERE id = $1 AND {BOUND}")
        for _ in range(3):
            seen.append(tuple(await stmt.fetchrow(1)))
        async with conn.transaction():
            async for row in conn.cursor(f"SELECT card_number, note FROM payments WHERE {BOUND}"):
                seen.append(tuple(row))
        seen.append(await conn.fetchval("SELECT 'still usable'"))
        await asyncio.sleep(0.3)
        await conn.close()

    asyncio.run(go())
    assert "still usable" in seen
    assert_clean(repr(seen).encode(), "asyncpg values", mode)
    wire = tap.take()
    assert b"1111" in wire, "the tap saw the results"
    assert_clean(wire, "asyncpg wire bytes", mode)


def test_prohibited_statements_are_refused(leak_stack):
    _, cluster, gateway, tap = leak_stack
    with psycopg.connect(dsn(gateway, tap), autocommit=True) as conn:
        for sql, rule in PROHIBITED:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(sql)
            if rule == "syntax-error":
                assert err.value.sqlstate == "42601", (sql, str(err.value))
            elif rule.startswith("review-"):
                assert err.value.sqlstate == "57014", (sql, str(err.value))
                assert "review expired" in str(err.value), (sql, str(err.value))
            else:
                assert err.value.sqlstate == "42501", (sql, str(err.value))
                assert rule in str(err.value), (sql, str(err.value))
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # Simple protocol (psql sends a multi-statement string as one Query).
        res = subprocess.run(["psql", dsn(gateway, tap), "-X", "-c", "SELECT 1; DROP TABLE payments /*hoopmark20*/"],
                             capture_output=True, text=True)
        assert "block-drop-table" in res.stderr, res.stderr
        # Extended protocol pipeline: a refused Parse, then a good statement.
        with pytest.raises(psycopg.Error) as err:
            with conn.pipeline():
                conn.execute("SELECT pg_read_file('/etc/passwd') /*hoopmark21*/")
                conn.execute("SELECT 42")
        assert err.value.sqlstate == "42501" and "block-file-access-functions" in str(err.value)
        with conn.pipeline():
            good = conn.execute("SELECT 43")
        assert good.fetchone() == (43,)
        # Inside a transaction: the refusal aborts it like any error.
        with pytest.raises(psycopg.Error):
            with conn.transaction():
                conn.execute("SET ROLE postgres /*hoopmark22*/")
        assert conn.execute("SELECT count(*) FROM payments WHERE amount <= 10000").fetchone() == (1,)
    assert cluster.psql("payments", "SELECT count(*) FROM payments").strip() == "2"
    log = (cluster.dir / "log").read_text(errors="replace")
    assert "hoopmark" not in log, [line for line in log.splitlines() if "hoopmark" in line]
    assert "LISTEN" in log or "SELECT" in log, "statement logging is on"
