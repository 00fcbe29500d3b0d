"""Just-in-time approvals end to end: a `review` rule holds the statement in
the gateway (nothing reaches Postgres), the client gets a NoticeResponse
naming the review and waits; a reviewer approves, denies or modifies it
through the admin API (or the /reviews page, in headless Chromium), or it
expires, or the client cancels or goes away.

Real clients (psql, psycopg 3 in simple, extended and pipeline mode, libpq
pipelining through psycopg's pq layer, asyncpg), the `hoop` binary,
Postgres 15 (the session cluster of conftest.py, schema review_e2e). Each
test uses its own requester subject, so reviews never get mixed up; tests
wait on the API, not on sleeps. Expiry is 5 s, so a test decides well
within that.

Covered: the notice (id, rule, decision URL, expiry), approve / deny /
modify (and a modification the rules block: 422, still pending) / expiry /
cancel / disconnect, who may decide (401, 403 for outsiders and for the
requester, 404), min_approvals, grants, `hoop reviews`, simple and extended
protocol, multi-statement queries, pipelines, transactions (approve →
COMMIT keeps the work; deny → aborted, even COMMIT keeps nothing), server
messages (NOTIFY) and the absence of upstream locks and statement_timeout
while held, two gateways on one Postgres store, and the /reviews page in
headless Chromium (tests/browser/approve-review.mjs)."""
import asyncio
import http.server
import json
import os
import re
import select
import subprocess
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg
import psycopg
import psycopg.errors
import pytest
from psycopg import pq

from conftest import HOOP_BIN, PG_BIN, ROOT, Gateway

SCHEMA = "review_e2e"
EXPIRY_S = 5
HELD_SQL = f"SELECT id, amount FROM {SCHEMA}.payments WHERE amount > 10000 ORDER BY id"
HELD_ROWS = [(3, Decimal("12000.00")), (4, Decimal("25000.00")), (5, Decimal("99999.99"))]
PARAM_SQL = f"SELECT id, amount FROM {SCHEMA}.payments WHERE amount > %s ORDER BY id"
MODIFIED_SQL = f"SELECT id, amount FROM {SCHEMA}.payments WHERE amount > 20000 ORDER BY id"
MODIFIED_ROWS = HELD_ROWS[1:]
RULE = "review-large-payments"
RULE_MESSAGE = "payments above 10000 need a second pair of eyes"

RULES = f"""
[[rules]]
name = "{RULE}"
action = "review"
message = "{RULE_MESSAGE}"
kinds = ["select"]
tables = ["payments"]
predicate = "amount > 10000"

[[rules]]
name = "review-payment-writes"
action = "review"
kinds = ["dml"]
tables = ["payments"]

[[rules]]
name = "review-refunds"
action = "review"
kinds = ["select"]
tables = ["refunds"]
"""


class Webhook:
    """A webhook endpoint: records every POSTed JSON body."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path, body in list(self.received):
                if predicate(body):
                    return path, body
            time.sleep(0.05)
        pytest.fail(f"no matching webhook call within {timeout}s; got {self.received}")

    def close(self):
        self.server.shutdown()


def review_config(webhook):
    def text(gw):
        return RULES + f"""
[reviews]
reviewer_group = "reviewers"
expiry = "{EXPIRY_S}s"
public_url = "{gw.admin_url}"
grants_allowed = true

[reviews.min_approvals]
review-refunds = 2

[reviews.webhook]
url = "{webhook.url}"
format = "json"
"""
    return text


@pytest.fixture(scope="module")
def rv(stack):
    """A gateway with review rules on the session's cluster (its own
    schema), and reviewer tokens."""
    cluster, base_gw = stack
    cluster.psql("payments", f"""
        CREATE SCHEMA {SCHEMA};
        CREATE TABLE {SCHEMA}.payments(id bigint PRIMARY KEY, amount numeric(12,2), note text);
        INSERT INTO {SCHEMA}.payments VALUES
            (1, 50.00, NULL), (2, 500.00, NULL), (3, 12000.00, NULL), (4, 25000.00, NULL), (5, 99999.99, NULL);
        CREATE TABLE {SCHEMA}.log(entry text);
        CREATE TABLE {SCHEMA}.refunds(id bigint);
        INSERT INTO {SCHEMA}.refunds VALUES (1), (2);
        GRANT USAGE ON SCHEMA {SCHEMA} TO fraud_agent;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {SCHEMA} TO fraud_agent;""")
    webhook = Webhook()
    gw = Gateway(cluster, base_gw.dir.parent / "gw-reviews", extra_config=review_config(webhook))
    gw.webhook = webhook
    try:
        gw.start()
        gw.alice = gw.token(sub="alice", group="reviewers")
        gw.bob = gw.token(sub="bob", group="reviewers")
        yield cluster, gw
    finally:
        gw.stop()
        webhook.close()


# ---------------------------------------------------------------- helpers

def new_sub(tag):
    return f"agent-{tag}-{uuid.uuid4().hex[:6]}"


def dsn(gw, sub, **extra):
    parts = {"host": "127.0.0.1", "port": gw.port, "dbname": "payments", "user": sub,
             "password": gw.token(sub=sub), **extra}
    return " ".join(f"{k}={v}" for k, v in parts.items())


class Client(threading.Thread):
    """Runs `fn` (one client's statements) in a thread; `outcome()` joins
    and returns its result or raises its exception."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.result = None
        self.error = None
        self.done = threading.Event()
        self.start()

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e
        finally:
            self.done.set()

    def outcome(self, timeout=15):
        self.join(timeout)
        assert not self.is_alive(), f"the client is still waiting {timeout}s later"
        if self.error is not None:
            raise self.error
        return self.result


def finished(client):
    if client is None:
        return None
    if isinstance(client, subprocess.Popen):
        if client.poll() is None:
            return None
        out, err = client.communicate()
        return f"exit {client.returncode}: {out}{err}"
    if client.done.is_set():
        return f"error {client.error!r}" if client.error is not None else f"result {client.result!r}"
    return None


def wait_review(gw, sub, status="pending", client=None, timeout=10):
    """The review requested by `sub` once it has `status`, polled on the API.
    Fails at once if the client finished meanwhile (it was not held)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        code, body = gw.api("GET", "/api/reviews", gw.alice)
        assert code == 200, (code, body)
        mine = [r for r in body["reviews"] if r["subject"] == sub]
        last = mine
        for review in mine:
            if review["status"] == status:
                return review
        done = finished(client)
        if done is not None and status == "pending":
            pytest.fail(f"the statement was not held for review: the client finished with {done}; "
                        f"reviews of {sub}: {mine}\n--- gateway log ---\n{gw.log_tail()}")
        time.sleep(0.1)
    pytest.fail(f"no {status} review of {sub} within {timeout}s; reviews of {sub}: {last}; "
                f"client: {finished(client) or 'still waiting'}\n--- gateway log ---\n{gw.log_tail()}")


def start_held(gw, sub, protocol, conn):
    """The held read through psycopg: simple protocol (no parameters) or
    extended (a bind parameter)."""
    if protocol == "simple":
        return Client(lambda: conn.execute(HELD_SQL).fetchall())
    return Client(lambda: conn.execute(PARAM_SQL, (10000,)).fetchall())


def decide(gw, review_id, action, token, body=None, expect=200):
    code, answer = gw.api("POST", f"/api/reviews/{review_id}/{action}", token, body or {})
    assert code == expect, (action, code, answer)
    return answer


OPEN_CONNECTIONS = []


@pytest.fixture(autouse=True)
def close_connections():
    """Connections a test left open (it failed half-way) are closed."""
    yield
    while OPEN_CONNECTIONS:
        try:
            OPEN_CONNECTIONS.pop().close()
        except Exception:  # noqa: BLE001 - best effort
            pass


def psycopg_conn(gw, sub, notices=None, **kw):
    conn = psycopg.connect(dsn(gw, sub, **kw), autocommit=True)
    OPEN_CONNECTIONS.append(conn)
    if notices is not None:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    return conn


class Notices(list):
    """Notice messages as they arrive, with an event for the first one."""

    def __init__(self):
        super().__init__()
        self.arrived = threading.Event()

    def append(self, item):
        super().append(item)
        self.arrived.set()


def assert_nothing_upstream(cluster, app, needle=f"{SCHEMA}.payments"):
    """The held statement has not reached Postgres: the client's upstream
    backend (found by application_name) never saw its text and is idle."""
    seen = cluster.psql("payments", "SELECT coalesce(string_agg(state || ': ' || query, ' | '), '<no backend>') "
                                    f"FROM pg_stat_activity WHERE application_name = '{app}'").strip()
    assert "<no backend>" not in seen, f"no upstream backend with application_name {app}"
    assert needle not in seen and seen.startswith("idle"), f"the held statement reached Postgres: {seen}"


NOTICE_RE = re.compile(
    r'statement held for review (r-[0-9a-f]{16}) \(rule "([^"]+)": (.*)\); '
    r'a reviewer decides at (\S+); it waits at most (\S+)')


# ---------------------------------------------------------------- tests

def test_statements_no_rule_holds_run_at_once(rv):
    _, gw = rv
    sub = new_sub("free")
    notices = Notices()
    with psycopg_conn(gw, sub, notices) as conn:
        assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.payments WHERE amount <= 10000").fetchone() == (2,)
    assert notices == []
    code, body = gw.api("GET", "/api/reviews", gw.alice)
    assert code == 200 and not [r for r in body["reviews"] if r["subject"] == sub]


def test_approve_simple_protocol_psycopg(rv):
    cluster, gw = rv
    sub, app = new_sub("approve"), f"held-{uuid.uuid4().hex[:8]}"
    notices = Notices()
    conn = psycopg_conn(gw, sub, notices, application_name=app)
    client = Client(lambda: conn.execute(HELD_SQL).fetchall())
    review = wait_review(gw, sub, client=client)

    assert re.fullmatch(r"r-[0-9a-f]{16}", review["id"]), review
    assert review["rule"] == RULE and review["status"] == "pending"
    assert "amount > 10000" in review["sql"] and review["created_at"], review
    # The client was told at once, before anyone decided.
    assert notices.arrived.wait(5), "no NoticeResponse while the statement is held"
    m = NOTICE_RE.search(notices[0])
    assert m, notices
    assert m.group(1) == review["id"] and m.group(2) == RULE and RULE_MESSAGE in m.group(3), notices
    assert m.group(4) == f"{gw.admin_url}/reviews#{review['id']}", notices
    assert m.group(5) == f"{EXPIRY_S}s", notices
    # Nothing reached Postgres: the upstream backend never saw the statement.
    assert_nothing_upstream(cluster, app)
    assert not client.done.wait(0.3), "the client did not wait"

    approved = decide(gw, review["id"], "approve", gw.alice, {"reason": "month-end check"})
    assert approved["status"] == "approved", approved
    assert client.outcome() == HELD_ROWS
    code, shown = gw.api("GET", f"/api/reviews/{review['id']}", gw.bob)
    assert code == 200 and shown["status"] == "approved", shown
    assert [(d["reviewer"], d["action"], d.get("reason")) for d in shown["decisions"]] == \
        [("alice", "approve", "month-end check")], shown
    # The session goes on normally.
    assert conn.execute("SELECT 1").fetchone() == (1,)
    conn.close()


PAN = "4111111111111111"


def test_review_shows_masked_sql_and_notifies(rv):
    """The review (API, webhook) holds the statement with card-number
    literals masked; the webhook names the review and where to decide."""
    _, gw = rv
    sub = new_sub("masked")
    sql = f"SELECT id, amount FROM {SCHEMA}.payments WHERE amount > 10000 AND note IS DISTINCT FROM '{PAN}' ORDER BY id"
    conn = psycopg_conn(gw, sub)
    client = Client(lambda: conn.execute(sql).fetchall())
    review = wait_review(gw, sub, client=client)
    _, hook = gw.webhook.wait_for(lambda b: b.get("review", {}).get("id") == review["id"])
    decide(gw, review["id"], "approve", gw.alice)
    assert client.outcome() == HELD_ROWS
    assert PAN not in review["sql"] and "1111" in review["sql"], review["sql"]
    assert hook["event"] == "review.created" and hook["decision_url"] == f"{gw.admin_url}/reviews#{review['id']}", hook
    assert hook["review"]["subject"] == sub and hook["review"]["rule"] == RULE, hook
    assert PAN not in json.dumps(hook), hook


def test_multi_statement_query_string(rv):
    """Simple protocol, one Query with two statements, the second needing
    review: once approved, both answer."""
    _, gw = rv
    sub = new_sub("multi")
    conn = psycopg_conn(gw, sub)

    def run():
        cur = conn.execute("SELECT 1 AS first; " + HELD_SQL)
        first = cur.fetchall()
        assert cur.nextset()
        return first, cur.fetchall()

    client = Client(run)
    review = wait_review(gw, sub, client=client)
    decide(gw, review["id"], "approve", gw.alice)
    assert client.outcome() == ([(1,)], HELD_ROWS)
    conn.close()


def test_approve_psql(rv):
    _, gw = rv
    sub = new_sub("psql")
    proc = subprocess.Popen([str(PG_BIN / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                             f"host=127.0.0.1 port={gw.port} dbname=payments user={sub}", "-c", HELD_SQL],
                            env=dict(os.environ, PGPASSWORD=gw.token(sub=sub)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        review = wait_review(gw, sub, client=proc)
        decide(gw, review["id"], "approve", gw.bob)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    assert out.split() == ["3|12000.00", "4|25000.00", "5|99999.99"], out
    assert f"NOTICE:  statement held for review {review['id']}" in err, err


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_deny(rv, protocol):
    _, gw = rv
    sub = new_sub(f"deny-{protocol}")
    conn = psycopg_conn(gw, sub)
    client = start_held(gw, sub, protocol, conn)
    review = wait_review(gw, sub, client=client)
    denied = decide(gw, review["id"], "deny", gw.bob, {"reason": "too broad: name the payment ids"})
    assert denied["status"] == "denied", denied
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        client.outcome()
    assert e.value.sqlstate == "42501"
    message = e.value.diag.message_primary or ""
    assert "bob" in message and "too broad: name the payment ids" in message, message
    assert conn.execute("SELECT 1").fetchone() == (1,)
    conn.close()


def hoop_reviews(gw, token, *args):
    return subprocess.run([str(HOOP_BIN), "reviews", args[0], "-c", str(gw.config), *args[1:]],
                          env=dict(os.environ, HOOP_TOKEN=token), capture_output=True, text=True, timeout=30)


def test_cli_lists_and_decides(rv):
    """`hoop reviews list|show|approve` against the same gateway; the
    requester's own token is refused (exit 4)."""
    _, gw = rv
    sub = new_sub("cli")
    conn = psycopg_conn(gw, sub)
    client = Client(lambda: conn.execute(HELD_SQL).fetchall())
    review = wait_review(gw, sub, client=client)
    rid = review["id"]
    listed = hoop_reviews(gw, gw.alice, "list", "--status", "pending")
    assert listed.returncode == 0 and rid in listed.stdout and sub in listed.stdout, listed
    shown = hoop_reviews(gw, gw.alice, "show", rid)
    assert shown.returncode == 0 and "pending" in shown.stdout and "amount > 10000" in shown.stdout, shown
    own = hoop_reviews(gw, gw.token(sub=sub, group="reviewers"), "approve", rid)
    assert own.returncode == 4, own
    approved = hoop_reviews(gw, gw.alice, "approve", rid, "--reason", "from the CLI")
    assert approved.returncode == 0 and f"review {rid} is approved" in approved.stdout, approved
    assert client.outcome() == HELD_ROWS
    again = hoop_reviews(gw, gw.bob, "deny", rid)
    assert again.returncode == 6, again
    conn.close()


def test_modify_runs_the_replacement(rv):
    _, gw = rv
    sub = new_sub("modify")
    conn = psycopg_conn(gw, sub)
    client = Client(lambda: conn.execute(HELD_SQL).fetchall())
    review = wait_review(gw, sub, client=client)
    modified = decide(gw, review["id"], "modify", gw.alice, {"sql": MODIFIED_SQL, "reason": "only the largest"})
    assert modified["status"] == "modified", modified
    assert modified["modified_sql"] == MODIFIED_SQL and "amount > 10000" in modified["sql"], modified
    assert client.outcome() == MODIFIED_ROWS
    conn.close()


def test_modify_extended_protocol(rv):
    """asyncpg (Parse/Describe, then Bind/Execute): the replacement, of the
    same shape, runs instead."""
    _, gw = rv
    sub = new_sub("modext")

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=gw.port, user=sub, password=gw.token(sub=sub),
                                     database="payments")
        try:
            return [tuple(r) for r in await conn.fetch(HELD_SQL)]
        finally:
            await conn.close()

    client = Client(lambda: asyncio.run(run()))
    review = wait_review(gw, sub, client=client)
    decide(gw, review["id"], "modify", gw.alice, {"sql": MODIFIED_SQL})
    assert client.outcome() == MODIFIED_ROWS


def test_blocked_modification_is_refused_and_review_stays_pending(rv):
    _, gw = rv
    sub = new_sub("modblock")
    conn = psycopg_conn(gw, sub)
    client = Client(lambda: conn.execute(HELD_SQL).fetchall())
    review = wait_review(gw, sub, client=client)
    for sql in ["ALTER SYSTEM SET work_mem = '1MB'", "DROP DATABASE payments",
                f"SELECT 1; ALTER SYSTEM SET work_mem = '1MB'"]:
        answer = decide(gw, review["id"], "modify", gw.alice, {"sql": sql}, expect=422)
        assert "block" in answer["error"], answer
    code, shown = gw.api("GET", f"/api/reviews/{review['id']}", gw.alice)
    assert code == 200 and shown["status"] == "pending" and not shown.get("modified_sql"), shown
    assert not client.done.is_set(), finished(client)
    decide(gw, review["id"], "approve", gw.alice)
    assert client.outcome() == HELD_ROWS
    conn.close()


def test_expiry(rv):
    _, gw = rv
    sub = new_sub("expire")
    conn = psycopg_conn(gw, sub)
    started = time.monotonic()
    client = Client(lambda: conn.execute(HELD_SQL).fetchall())
    review = wait_review(gw, sub, client=client)
    with pytest.raises(psycopg.errors.QueryCanceled) as e:
        client.outcome(timeout=EXPIRY_S + 10)
    waited = time.monotonic() - started
    assert e.value.sqlstate == "57014"
    assert "review expired" in (e.value.diag.message_primary or ""), e.value.diag.message_primary
    assert EXPIRY_S - 0.5 <= waited <= EXPIRY_S + 5, waited
    assert wait_review(gw, sub, status="expired", timeout=5)["id"] == review["id"]
    decide(gw, review["id"], "approve", gw.alice, expect=409)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    conn.close()


def test_cancel_while_held_withdraws(rv):
    _, gw = rv
    sub = new_sub("cancel")
    conn = psycopg_conn(gw, sub)
    client = Client(lambda: conn.execute(HELD_SQL).fetchall())
    review = wait_review(gw, sub, client=client)
    conn.cancel_safe(timeout=10)
    with pytest.raises(psycopg.errors.QueryCanceled) as e:
        client.outcome()
    assert e.value.sqlstate == "57014"
    assert "canceling statement due to user request" in (e.value.diag.message_primary or ""), str(e.value)
    assert wait_review(gw, sub, status="withdrawn", timeout=5)["id"] == review["id"]
    decide(gw, review["id"], "approve", gw.alice, expect=409)
    # The connection is still good.
    assert conn.execute("SELECT 2").fetchone() == (2,)
    conn.close()


def test_disconnect_while_held_withdraws(rv):
    _, gw = rv
    sub = new_sub("gone")
    proc = subprocess.Popen([str(PG_BIN / "psql"), "-X", "-A", "-t",
                             f"host=127.0.0.1 port={gw.port} dbname=payments user={sub}", "-c", HELD_SQL],
                            env=dict(os.environ, PGPASSWORD=gw.token(sub=sub)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        review = wait_review(gw, sub, client=proc)
    finally:
        proc.kill()
        proc.communicate()
    assert wait_review(gw, sub, status="withdrawn", timeout=8)["id"] == review["id"]


def test_who_may_decide(rv):
    _, gw = rv
    sub = new_sub("authz")
    conn = psycopg_conn(gw, sub)
    client = Client(lambda: conn.execute(HELD_SQL).fetchall())
    review = wait_review(gw, sub, client=client)
    rid = review["id"]

    # No token, or not a token: 401.
    assert gw.api("GET", "/api/reviews")[0] == 401
    assert gw.api("POST", f"/api/reviews/{rid}/approve")[0] == 401
    assert gw.api("POST", f"/api/reviews/{rid}/approve", "not-a-jwt")[0] == 401
    # A valid token outside the reviewer group: 403, for reading too.
    outsider = gw.token(sub="mallory", group="fraud-agents")
    code, body = gw.api("POST", f"/api/reviews/{rid}/approve", outsider)
    assert code == 403, (code, body)
    assert gw.api("GET", "/api/reviews", outsider)[0] == 403
    assert gw.api("GET", f"/api/reviews/{rid}", outsider)[0] == 403
    # The requester itself, even with a reviewer token: 403.
    self_reviewer = gw.token(sub=sub, group="reviewers")
    for action, payload in [("approve", {}), ("modify", {"sql": MODIFIED_SQL})]:
        code, body = gw.api("POST", f"/api/reviews/{rid}/{action}", self_reviewer, payload)
        assert code == 403, (action, code, body)
    # Unknown review: 404.
    assert gw.api("GET", "/api/reviews/r-0000000000000000", gw.alice)[0] == 404

    code, shown = gw.api("GET", f"/api/reviews/{rid}", gw.alice)
    assert shown["status"] == "pending" and shown["decisions"] == [], shown
    assert not client.done.is_set(), finished(client)
    decide(gw, rid, "deny", gw.alice, {"reason": "cleanup"})
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        client.outcome()
    conn.close()


def test_min_approvals(rv):
    """`[reviews.min_approvals] review-refunds = 2`: one approval is not
    enough, the same reviewer cannot count twice, a second one runs it."""
    _, gw = rv
    sub = new_sub("twice")
    conn = psycopg_conn(gw, sub)
    client = Client(lambda: conn.execute(f"SELECT count(*) FROM {SCHEMA}.refunds").fetchone())
    review = wait_review(gw, sub, client=client)
    assert review["rule"] == "review-refunds" and review["min_approvals"] == 2, review
    first = decide(gw, review["id"], "approve", gw.alice)
    assert first["status"] == "pending", first
    decide(gw, review["id"], "approve", gw.alice, expect=409)
    assert not client.done.wait(0.5), finished(client)
    assert decide(gw, review["id"], "approve", gw.bob)["status"] == "approved"
    assert client.outcome() == (2,)
    conn.close()


def test_grant_lets_the_same_statement_run_again(rv):
    """Approved with `grant_for`: the same identity reruns the same
    statement without a new review until the grant ends."""
    _, gw = rv
    sub = new_sub("grant")
    conn = psycopg_conn(gw, sub)
    client = Client(lambda: conn.execute(HELD_SQL).fetchall())
    review = wait_review(gw, sub, client=client)
    approved = decide(gw, review["id"], "approve", gw.alice, {"grant_for": "1m", "reason": "month end"})
    assert approved["grant_until"], approved
    assert client.outcome() == HELD_ROWS
    again = Client(lambda: conn.execute(HELD_SQL).fetchall())
    assert again.outcome(timeout=5) == HELD_ROWS
    code, body = gw.api("GET", "/api/reviews", gw.alice)
    assert [r["id"] for r in body["reviews"] if r["subject"] == sub] == [review["id"]], body
    conn.close()
    # Another identity gets no grant: it is held.
    other = new_sub("grant-other")
    conn2 = psycopg_conn(gw, other)
    client2 = Client(lambda: conn2.execute(HELD_SQL).fetchall())
    review2 = wait_review(gw, other, client=client2)
    decide(gw, review2["id"], "deny", gw.alice)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        client2.outcome()
    conn2.close()


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_server_messages_relayed_while_held(rv, protocol):
    """A NOTIFY sent while the statement is held reaches the waiting client
    (libpq through psycopg's pq layer, which surfaces it as it arrives)."""
    cluster, gw = rv
    sub = new_sub(f"notify-{protocol}")
    channel = f"held_{uuid.uuid4().hex[:8]}"
    pg = pq.PGconn.connect(dsn(gw, sub).encode())
    assert pg.status == pq.ConnStatus.OK, pg.error_message
    try:
        assert pg.exec_(f"LISTEN {channel}".encode()).status == pq.ExecStatus.COMMAND_OK
        if protocol == "simple":
            pg.send_query(HELD_SQL.encode())
        else:
            pg.send_query_params(HELD_SQL.encode(), None)
        while pg.flush():
            time.sleep(0.01)
        review = wait_review(gw, sub)
        cluster.psql("payments", f"NOTIFY {channel}, 'while-held'")
        heard = []
        deadline = time.monotonic() + 3
        while not heard and time.monotonic() < deadline:
            select.select([pg.socket], [], [], 0.1)
            pg.consume_input()
            while n := pg.notifies():
                heard.append(n.extra.decode())
        decide(gw, review["id"], "approve", gw.alice)
        rows = None
        while rows is None:
            select.select([pg.socket], [], [], 0.5)
            pg.consume_input()
            while not pg.is_busy():
                res = pg.get_result()
                if res is None:
                    break
                assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message
                rows = res.ntuples
        assert rows == len(HELD_ROWS)
        assert heard == ["while-held"], \
            f"the notification did not reach the client while its statement was held: {heard}"
    finally:
        pg.finish()


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_held_statement_takes_no_locks(rv, protocol):
    """While held (outside a transaction) the statement holds nothing in
    Postgres: another session can take an ACCESS EXCLUSIVE lock on its table
    (a held read must not queue DDL, and everyone behind it, for the whole
    review)."""
    cluster, gw = rv
    sub, app = new_sub(f"locks-{protocol}"), f"held-{uuid.uuid4().hex[:8]}"
    conn = psycopg_conn(gw, sub, application_name=app)
    client = start_held(gw, sub, protocol, conn)
    review = wait_review(gw, sub, client=client)
    try:
        try:
            cluster.psql("payments", f"BEGIN; SET LOCAL lock_timeout = '500ms'; "
                                     f"LOCK TABLE {SCHEMA}.payments IN ACCESS EXCLUSIVE MODE; ROLLBACK")
            locked = None
        except RuntimeError as e:
            locked = str(e).strip().splitlines()[-1]
        upstream = cluster.psql("payments", "SELECT coalesce(string_agg(state || ': ' || query, ' | '), '') "
                                            f"FROM pg_stat_activity WHERE application_name = '{app}'").strip()
    finally:
        decide(gw, review["id"], "approve", gw.alice)
    assert client.outcome() == HELD_ROWS
    assert locked is None, f"a held statement ({protocol} protocol) blocks other sessions: {locked}; " \
                           f"its upstream backend: {upstream}"
    conn.close()


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_statement_timeout_does_not_run_while_held(rv, protocol):
    """statement_timeout counts from when the approved statement runs, not
    from when it was held (README: it never reached the server)."""
    _, gw = rv
    sub = new_sub(f"stmt-timeout-{protocol}")
    conn = psycopg_conn(gw, sub)
    conn.execute("SET statement_timeout = '1s'")
    client = start_held(gw, sub, protocol, conn)
    review = wait_review(gw, sub, client=client)
    time.sleep(1.8)
    decide(gw, review["id"], "approve", gw.alice)
    assert client.outcome() == HELD_ROWS
    conn.close()


def test_extended_protocol_parameters_approve(rv):
    _, gw = rv
    sub = new_sub("ext2")
    conn = psycopg_conn(gw, sub)
    client = Client(lambda: conn.execute(PARAM_SQL, (10000,)).fetchall())
    review = wait_review(gw, sub, client=client)
    decide(gw, review["id"], "approve", gw.alice)
    assert client.outcome() == HELD_ROWS
    conn.close()


def test_extended_protocol_prepared(rv):
    """A named prepared statement (psycopg prepare=True): each execution is
    judged, so the second one is held again."""
    _, gw = rv
    sub = new_sub("prep")
    conn = psycopg_conn(gw, sub)
    seen = []
    for _ in range(2):
        client = Client(lambda: conn.execute(PARAM_SQL, (10000,), prepare=True).fetchall())
        review = wait_review(gw, sub, client=client)
        assert review["id"] not in seen
        seen.append(review["id"])
        decide(gw, review["id"], "approve", gw.alice)
        assert client.outcome() == HELD_ROWS
    conn.close()


def test_asyncpg_approve(rv):
    _, gw = rv
    sub = new_sub("apg")
    logs = []

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=gw.port, user=sub, password=gw.token(sub=sub),
                                     database="payments")
        conn.add_log_listener(lambda _c, msg: logs.append(msg.message))
        try:
            rows = await conn.fetch(HELD_SQL.replace("> 10000", "> $1"), Decimal(10000))
            return [tuple(r) for r in rows]
        finally:
            await conn.close()

    client = Client(lambda: asyncio.run(run()))
    review = wait_review(gw, sub, client=client)
    decide(gw, review["id"], "approve", gw.alice)
    assert client.outcome() == HELD_ROWS
    assert any(review["id"] in m for m in logs), logs


def test_asyncpg_timeout_cancels_and_withdraws(rv):
    _, gw = rv
    sub = new_sub("apgcancel")

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=gw.port, user=sub, password=gw.token(sub=sub),
                                     database="payments")
        try:
            try:
                await conn.fetch(HELD_SQL, timeout=1.5)
                return "not cancelled"
            except asyncio.TimeoutError:
                pass
            return await conn.fetchval("SELECT 42")
        finally:
            await conn.close()

    client = Client(lambda: asyncio.run(run()))
    review = wait_review(gw, sub, client=client)
    assert client.outcome() == 42
    assert wait_review(gw, sub, status="withdrawn", timeout=5)["id"] == review["id"]


def test_pipeline_psycopg(rv):
    """psycopg pipeline mode: the held statement and the one queued behind
    it complete, in order, once approved."""
    _, gw = rv
    sub = new_sub("pipe")
    conn = psycopg_conn(gw, sub)

    def run():
        with conn.pipeline():
            c1 = conn.cursor().execute("SELECT 1 AS early")
            c2 = conn.cursor().execute(HELD_SQL)
            c3 = conn.cursor().execute("SELECT 3 AS late")
        return c1.fetchall(), c2.fetchall(), c3.fetchall()

    client = Client(run)
    review = wait_review(gw, sub, client=client)
    decide(gw, review["id"], "approve", gw.alice)
    assert client.outcome() == ([(1,)], HELD_ROWS, [(3,)])
    conn.close()


def libpq_pipeline(conninfo, statements, events, flush_after=(), timeout=30):
    """libpq pipeline mode (psycopg's pq layer): sends every statement and
    one Sync at once (a Flush after the statements numbered in
    `flush_after`), then records each result as it arrives."""
    pg = pq.PGconn.connect(conninfo.encode())
    assert pg.status == pq.ConnStatus.OK, pg.error_message
    primary = pq.DiagnosticField.MESSAGE_PRIMARY
    pg.notice_handler = lambda res: events.append(("notice", (res.error_field(primary) or b"").decode()))
    try:
        pg.enter_pipeline_mode()
        for i, sql in enumerate(statements):
            pg.send_query_params(sql.encode(), None)
            if i in flush_after:
                pg.send_flush_request()
        pg.pipeline_sync()
        while pg.flush():
            time.sleep(0.01)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            select.select([pg.socket], [], [], 0.5)
            pg.consume_input()
            while not pg.is_busy():
                res = pg.get_result()
                if res is None:
                    continue
                status = pq.ExecStatus(res.status)
                if status == pq.ExecStatus.PIPELINE_SYNC:
                    events.append(("sync",))
                    return list(events)
                if status == pq.ExecStatus.TUPLES_OK:
                    events.append(("rows", [tuple(res.get_value(i, j).decode() for j in range(res.nfields))
                                            for i in range(res.ntuples)]))
                else:
                    events.append((status.name, (res.error_field(primary) or b"").decode()))
        raise AssertionError(f"no Sync answer within {timeout}s; got {events}")
    finally:
        pg.finish()


def test_pipeline_earlier_results_arrive_while_held(rv):
    """Pipelined: the statement before the held one is answered while the
    held one waits (the client sent a Flush after it: without one Postgres
    itself answers nothing before the Sync); the one after it waits behind it."""
    _, gw = rv
    sub = new_sub("pipe-libpq")
    events = []
    client = Client(lambda: libpq_pipeline(dsn(gw, sub), ["SELECT 1 AS early", HELD_SQL, "SELECT 3 AS late"],
                                           events, flush_after=(0,)))
    review = wait_review(gw, sub, client=client)
    deadline = time.monotonic() + 3
    while not any(e[0] == "rows" for e in events) and time.monotonic() < deadline:
        time.sleep(0.05)
    before = [e for e in events if e[0] != "notice"]
    decide(gw, review["id"], "approve", gw.alice)
    after = client.outcome()
    held_rows = [(str(i), str(a)) for i, a in HELD_ROWS]
    assert [e for e in after if e[0] != "notice"] == \
        [("rows", [("1",)]), ("rows", held_rows), ("rows", [("3",)]), ("sync",)], after
    assert any(e[0] == "notice" and review["id"] in e[1] for e in after), after
    assert before == [("rows", [("1",)])], f"while the second statement was held the client had {before}"


def run_sql(conn, protocol, sql, value):
    """`sql` with one `%s`: inlined (simple protocol) or bound (extended)."""
    if protocol == "simple":
        return conn.execute(sql.replace("%s", f"'{value}'"))
    return conn.execute(sql, (value,))


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_transaction_approve_then_commit(rv, protocol):
    cluster, gw = rv
    sub = new_sub(f"txok-{protocol}")
    entry, note = f"tx-approve-{protocol}", f"approved-in-tx-{protocol}"
    conn = psycopg_conn(gw, sub)
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {SCHEMA}.log VALUES ('{entry}')")
    client = Client(lambda: run_sql(conn, protocol, f"UPDATE {SCHEMA}.payments SET note = %s WHERE id = 1",
                                    note).rowcount)
    review = wait_review(gw, sub, client=client)
    assert review["rule"] == "review-payment-writes", review
    decide(gw, review["id"], "approve", gw.alice)
    assert client.outcome() == 1
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    conn.execute("COMMIT")
    conn.close()
    assert cluster.psql("payments", f"SELECT note FROM {SCHEMA}.payments WHERE id = 1").strip() == note
    assert cluster.psql("payments", f"SELECT count(*) FROM {SCHEMA}.log WHERE entry = '{entry}'").strip() == "1"


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_transaction_deny_aborts(rv, protocol):
    """Denied inside a transaction: like any error, the transaction is
    aborted — on the server too, so even a COMMIT keeps nothing."""
    cluster, gw = rv
    sub = new_sub(f"txdeny-{protocol}")
    conn = psycopg_conn(gw, sub)
    for finish in ["ROLLBACK", "COMMIT"]:
        entry = f"tx-deny-{protocol}-{finish.lower()}"
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {SCHEMA}.log VALUES ('{entry}')")
        client = Client(lambda: run_sql(conn, protocol, f"UPDATE {SCHEMA}.payments SET note = %s WHERE id = 2",
                                        "denied"))
        review = wait_review(gw, sub, status="pending", client=client)
        decide(gw, review["id"], "deny", gw.bob, {"reason": "not during the freeze"})
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            client.outcome()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.execute(finish)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert cluster.psql("payments", f"SELECT count(*) FROM {SCHEMA}.log WHERE entry = '{entry}'").strip() == "0", \
            f"{finish} after a denied statement kept the transaction's earlier work"
    assert cluster.psql("payments", f"SELECT note IS NULL FROM {SCHEMA}.payments WHERE id = 2").strip() == "t"
    conn.close()


# ------------------------------------------------- two gateways, one store

STORE_PASSWORD = "e2e-review-store-pw-5"


@pytest.fixture(scope="module")
def pair(rv):
    """Gateways A and B with the Postgres review and audit store in one
    database of the test cluster."""
    cluster, gw = rv
    cluster.psql("postgres", f"CREATE ROLE rvw_store LOGIN PASSWORD '{STORE_PASSWORD}'")
    cluster.psql("postgres", "CREATE DATABASE rvw_shared OWNER rvw_store")
    gateways = []
    webhook = Webhook()

    def config(instance):
        def text(g):
            url = f"host=127.0.0.1 port={cluster.port} user=rvw_store dbname=rvw_shared"
            return RULES + f"""
[reviews]
reviewer_group = "reviewers"
expiry = "8s"
public_url = "{g.admin_url}"
store = "postgres"
url = "{url}"
password = {{ file = "store.password" }}

[reviews.webhook]
url = "{webhook.url}"
format = "slack"

[audit]
store = "postgres"
url = "{url}"
password = {{ file = "store.password" }}
instance_id = "{instance}"
"""
        return text

    try:
        for name in ["a", "b"]:
            base = gw.dir.parent / f"gw-shared-{name}"
            base.mkdir(parents=True, exist_ok=True)
            (base / "store.password").write_text(STORE_PASSWORD + "\n")
            os.chmod(base / "store.password", 0o600)
            g = Gateway(cluster, base, extra_config=config(f"e2e-gw-{name}"))
            g.start()
            g.alice = g.token(sub="alice", group="reviewers")
            g.webhook = webhook
            gateways.append(g)
        yield gateways
    finally:
        for g in gateways:
            g.stop()
        webhook.close()


def test_two_gateways_one_store(pair):
    a, b = pair
    sub = new_sub("pair")
    notices = Notices()
    conn = psycopg_conn(a, sub, notices)
    client = Client(lambda: conn.execute(HELD_SQL).fetchall())
    review = wait_review(b, sub, client=client)  # seen through B
    assert notices.arrived.wait(5) and f"{a.admin_url}/reviews#{review['id']}" in notices[0], notices
    # Slack-format notification, from A (where it is held), linking to A's page.
    _, hook = a.webhook.wait_for(lambda body: review["id"] in body.get("text", ""))
    buttons = [e for blk in hook["blocks"] if blk["type"] == "actions" for e in blk["elements"]]
    assert [e["url"] for e in buttons] == [f"{a.admin_url}/reviews#{review['id']}"], hook
    approved = decide(b, review["id"], "approve", b.alice, {"reason": "approved on B"})
    assert approved["status"] == "approved", approved
    assert client.outcome() == HELD_ROWS
    code, shown = a.api("GET", f"/api/reviews/{review['id']}", a.alice)
    assert code == 200 and shown["status"] == "approved", shown

    # And a denial through A for a statement held by B.
    sub2 = new_sub("pair2")
    conn2 = psycopg_conn(b, sub2)
    client2 = Client(lambda: conn2.execute(HELD_SQL).fetchall())
    review2 = wait_review(a, sub2, client=client2)
    decide(a, review2["id"], "deny", a.alice, {"reason": "denied on A"})
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        client2.outcome()
    assert "denied on A" in str(e.value)
    conn.close()
    conn2.close()


# ------------------------------------------------------------ the browser

BROWSER_DIR = ROOT / "tests" / "browser"


def test_browser_approves_held_statement(rv):
    """A reviewer opens /reviews in headless Chromium, enters a token, sees
    the held statement arrive, approves it; the waiting client gets its rows."""
    _, gw = rv
    assert Path("/usr/bin/chromium").exists() and (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), \
        "chromium or playwright-core missing: run tests/setup.sh"
    sub = new_sub("browser")
    reviewer = gw.token(sub="carol-browser", group="reviewers")
    node = subprocess.Popen(["node", str(BROWSER_DIR / "approve-review.mjs"), gw.admin_url, reviewer, sub],
                            cwd=BROWSER_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    conn = None
    try:
        ready = node.stdout.readline().strip()
        if not ready.startswith("ready"):
            node.kill()
            out, err = node.communicate()
            pytest.fail(f"the browser script did not get ready: {ready}{out}\n{err}")
        conn = psycopg_conn(gw, sub)
        client = Client(lambda: conn.execute(HELD_SQL).fetchall())
        try:
            out, err = node.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            out, err = node.communicate()
        lines = out.strip().splitlines()
        assert node.returncode == 0 and lines and lines[-1].startswith("done "), \
            f"browser script failed ({node.returncode}):\n{out}\n{err}\nclient: {finished(client)}\n" \
            f"--- gateway log ---\n{gw.log_tail()}"
        result = json.loads(lines[-1][5:])
        assert client.outcome() == HELD_ROWS
        assert "amount > 10000" in result["detailSql"] and result["finalStatus"] == "approved", result
        code, shown = gw.api("GET", f"/api/reviews/{result['reviewId']}", gw.alice)
        assert shown["subject"] == sub and shown["status"] == "approved", shown
        assert [d["reviewer"] for d in shown["decisions"]] == ["carol-browser"], shown
    finally:
        if node.poll() is None:
            node.kill()
        if conn is not None:
            conn.close()
