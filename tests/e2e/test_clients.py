"""Client compatibility: the same script of operations (DDL in a scratch
schema, inserts, selects of many types incl. binary, prepared statements, a
transaction, an error and recovery, COPY in/out, LISTEN/NOTIFY, cancel of a
pg_sleep) through hoop and directly; the results must be identical."""
import asyncio
import datetime as dt
import io
import json
import re
import subprocess
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg
import psycopg

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE.parent / "node"
JAVA_DIR = HERE.parent / "java"
PG_BIN = Path(__import__("os").environ.get("HOOP_PG15_BIN", "/usr/lib/postgresql/15/bin"))

ROWS = [
    (i, Decimal(i * 1000 + 7) / 100, i * 1.5, bytes([i, 0, 255]),
     dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=i),
     {"k": i, "s": "é"}, [i, i + 1], uuid.UUID(int=i), f"héllo {i}")
    for i in range(1, 21)
]
DDL = ("CREATE TABLE t(id int primary key, n numeric(12,2), f float8, b bytea, ts timestamptz, "
       "j jsonb, a int[], u uuid, txt text)")


def both(targets, fn):
    results = {mode: fn(target, f"compat_{fn.__name__}_{mode}") for mode, target in targets.items()}
    assert results["gateway"] == results["direct"]
    return results["gateway"]


def psycopg_script(target, schema):
    out = []
    with psycopg.connect(target.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}")
        conn.execute(DDL)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO t VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                            [r[:5] + (psycopg.types.json.Jsonb(r[5]),) + r[6:] for r in ROWS])
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                cur.execute("SELECT * FROM t ORDER BY id")
                out.append([repr(r) for r in cur.fetchall()])
        for i in (3, 5, 7, 9, 11, 13):
            out.append(conn.execute("SELECT txt, n FROM t WHERE id = %s", (i,), prepare=True).fetchone())
        try:
            with conn.transaction():
                conn.execute("INSERT INTO t(id) VALUES (100)")
                raise psycopg.Rollback()
        except psycopg.Rollback:
            pass
        out.append(conn.execute("SELECT count(*) FROM t").fetchone())
        try:
            conn.execute("SELECT 1/0")
        except psycopg.errors.DivisionByZero as e:
            out.append(e.sqlstate)
        out.append(conn.execute("SELECT 42").fetchone())
        with conn.cursor() as cur:
            with cur.copy("COPY (SELECT id, txt, b FROM t ORDER BY id) TO STDOUT") as copy:
                data = b"".join(bytes(c) for c in copy)
            out.append(data.decode())
            cur.execute("CREATE TABLE c(id int, txt text, b bytea)")
            with cur.copy("COPY c FROM STDIN") as copy:
                copy.write(data)
        out.append(conn.execute("SELECT count(*), sum(id) FROM c").fetchone())
        conn.execute("LISTEN ch")
        conn.execute("NOTIFY ch, 'hello'")
        # A notification of the session's own: its pid is the session's backend pid.
        out.append([(n.channel, n.payload, n.pid == conn.info.backend_pid)
                    for n in conn.notifies(timeout=5, stop_after=1)])
        out.append(conn.execute("SELECT pg_backend_pid()").fetchone()[0] == conn.info.backend_pid)
        # A setting named by a bind parameter (judged on the value bound).
        out.append(conn.execute("SELECT set_config(%s, %s, false)", ["lock_timeout", "2s"]).fetchone())
        with conn.pipeline():
            cursors = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(10)]
            conn.execute("SELECT 1")
        out.append([c.fetchone() for c in cursors])
        started = time.time()
        threading.Timer(0.5, conn.cancel_safe).start()
        try:
            conn.execute("SELECT pg_sleep(20)")
        except psycopg.errors.QueryCanceled as e:
            out.append(e.sqlstate)
        assert time.time() - started < 10
        out.append(conn.execute("SELECT 'still usable'").fetchone())
        # A server-side cursor: DECLARE, FETCH and CLOSE sent with Parse/Bind/Execute.
        with conn.transaction():
            with conn.cursor(name="sc") as cur:
                cur.execute("SELECT id, txt FROM t WHERE id > %s ORDER BY id", (2,))
                out.append(cur.fetchmany(3))
                out.append(len(cur.fetchall()))
        # Another client encoding, set by a bound value (as psycopg's own
        # suite does): text is sent, read and returned in LATIN9.
        conn.execute("SELECT set_config('client_encoding', %s, false)", ["latin9"])
        out.append(conn.execute("SELECT txt, '€ ' || %s FROM t WHERE txt = 'héllo 3'",
                                ["ç"]).fetchone())
        conn.execute("SET client_encoding = 'UTF8'")
        # Backslashes in ordinary literals, read as the server reads them.
        conn.execute("SET standard_conforming_strings = off")
        out.append(conn.execute("SELECT 'it\\'s', 'a\\\\b'").fetchone())
        conn.execute("RESET standard_conforming_strings")
        out.append(conn.execute("SELECT 'a\\b'").fetchone())
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return out


def test_psycopg3(targets):
    out = both(targets, psycopg_script)
    assert "57014" in out and "22012" in out
    assert [("ch", "hello", True)] in out, out
    assert ("héllo 3", "€ ç") in out, out
    assert ("it's", "a\\b") in out and ("a\\b",) in out, out


def asyncpg_script(target, schema):
    async def go():
        out = []
        kw = dict(host=target.host, port=target.port, user=target.user, password=target.password,
                  database="payments")
        if target.role:
            kw["server_settings"] = {"role": target.role}
        conn = await asyncpg.connect(**kw)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; SET search_path = {schema}")
        await conn.execute(DDL)
        await conn.executemany("INSERT INTO t VALUES ($1,$2,$3,$4,$5,$6::text::jsonb,$7,$8,$9)",
                               [r[:5] + (json.dumps(r[5]),) + r[6:] for r in ROWS])
        out.append([tuple(r) for r in await conn.fetch("SELECT * FROM t ORDER BY id")])  # binary protocol
        stmt = await conn.prepare("SELECT txt, n FROM t WHERE id = $1")
        for i in (3, 5, 7):
            out.append(tuple(await stmt.fetchrow(i)))
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO t(id) VALUES (100)")
                raise RuntimeError("rollback")
        except RuntimeError:
            pass
        out.append(await conn.fetchval("SELECT count(*) FROM t"))
        try:
            await conn.execute("SELECT 1/0")
        except asyncpg.DivisionByZeroError as e:
            out.append(e.sqlstate)
        buf = io.BytesIO()
        await conn.copy_from_query("SELECT id, txt FROM t ORDER BY id", output=buf)
        out.append(buf.getvalue().decode())
        await conn.execute("CREATE TABLE c(id int, txt text)")
        await conn.copy_to_table("c", source=io.BytesIO(buf.getvalue()))
        out.append(tuple(await conn.fetchrow("SELECT count(*), sum(id) FROM c")))
        got = asyncio.get_running_loop().create_future()
        await conn.add_listener("ch", lambda c, pid, ch, payload: got.done() or got.set_result((ch, payload)))
        await conn.execute("NOTIFY ch, 'hello'")
        out.append(await asyncio.wait_for(got, 5))
        started = time.time()
        try:
            await conn.execute("SELECT pg_sleep(20)", timeout=0.5)  # asyncpg cancels on timeout
        except asyncio.TimeoutError:
            out.append("cancelled")
        assert time.time() - started < 10
        out.append(await conn.fetchval("SELECT 'still usable'"))
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
        return out

    return asyncio.run(go())


def test_asyncpg(targets):
    out = both(targets, asyncpg_script)
    assert "cancelled" in out


def node_script(target, schema):
    cfg = {"host": target.host, "port": target.port, "user": target.user, "password": target.password,
           "database": "payments"}
    if target.role:
        cfg["options"] = f"-c role={target.role}"
    res = subprocess.run(["node", "compat.mjs", json.dumps(cfg), schema], cwd=NODE_DIR,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_node_postgres(targets):
    out = both(targets, node_script)
    assert "57014" in json.dumps(out)


def jdbc_script(target, schema):
    url = f"jdbc:postgresql://{target.host}:{target.port}/payments"
    props = {"user": target.user, "password": target.password, "sslmode": "disable"}
    if target.role:
        props["options"] = f"-c role={target.role}"
    res = subprocess.run(["java", "-cp", "/usr/share/java/postgresql.jar", str(JAVA_DIR / "Compat.java"),
                          url, json.dumps(props), schema], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_pgjdbc(targets):
    out = both(targets, jdbc_script)
    assert "57014" in out


def psql_script(target, schema):
    sql = (HERE / "compat.sql").read_text()
    res = subprocess.run([str(PG_BIN / "psql"), "-X", "-a", "-v", f"schema={schema}"], input=sql,
                         env=target.env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    text = (res.stdout + res.stderr).replace(schema, "SCHEMA")
    return re.sub(r"server process with PID \d+", "server process with PID N", text)


def test_psql(targets):
    out = both(targets, psql_script)
    assert "division by zero" in out and 'Asynchronous notification "ch" with payload "hello"' in out


def pgbench_run(target, mode):
    res = subprocess.run([str(PG_BIN / "pgbench"), "-n", "-S", "-c", "2", "-j", "2", "-t", "200", "-M", mode,
                          "-p", str(target.port), "payments"], env=target.env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"number of transactions actually processed: (\d+)/(\d+)", res.stdout)
    return m.groups() if m else res.stdout


def test_pgbench(stack, targets):
    cluster, _ = stack
    env = targets["direct"].env()
    env.pop("PGOPTIONS")
    env["PGUSER"] = "hoop_gateway"
    cluster.psql("payments", "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers")
    subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", "1", "payments"],
                   env=dict(env, PGOPTIONS="-c role=fraud_agent"), check=True, capture_output=True)
    for mode in ("simple", "extended", "prepared"):
        assert pgbench_run(targets["gateway"], mode) == pgbench_run(targets["direct"], mode) == ("400", "400")
