"""The gateway with the hoop extension preloaded (Postgres 15): the signed
session the gateway installs is accepted by the extension, masking follows
the mapped role, and a direct connection is refused. Fails (does not skip)
when the extension is not installed: tests/run.sh installs it."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from conftest import GATEWAY_PASSWORD, HOOP_BIN, PG_BIN, Cluster, Gateway, run


def extension_installed():
    share = subprocess.run([str(PG_BIN / "pg_config"), "--sharedir"], capture_output=True, text=True).stdout.strip()
    lib = subprocess.run([str(PG_BIN / "pg_config"), "--pkglibdir"], capture_output=True, text=True).stdout.strip()
    return Path(share, "extension", "hoop.control").is_file() and Path(lib, "hoop.so").is_file()


MAPPINGS = """
[[role_mapping]]
group = "payments-admins"
role = "payments_admin"
unmask = ["public.payments.card_number"]

[[role_mapping]]
group = "fraud-agents"
role = "fraud_agent"
"""
PAN = "4111111111111111"


@pytest.fixture(scope="module")
def ext_stack():
    assert extension_installed(), (
        "the hoop extension is not installed in Postgres 15: "
        f"cd extension && cargo pgrx install --pg-config {PG_BIN}/pg_config")
    base = Path(f"/tmp/hoop-e2e-ext-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    keys = base / "keys"
    printed = run([str(HOOP_BIN), "keys", "generate", "--out", str(keys), "--kid", "e2e-1"])
    trusted = re.search(r"hoop.trusted_keys = '([^']+)'", printed).group(1)
    cluster = Cluster(base / "pg")
    cluster.start(f"shared_preload_libraries = 'hoop'\nhoop.trusted_keys = '{trusted}'\n")
    cluster.psql("postgres", f"""
        CREATE ROLE hoop_gateway LOGIN NOINHERIT PASSWORD '{GATEWAY_PASSWORD}';
        CREATE ROLE fraud_agent NOLOGIN; CREATE ROLE payments_admin NOLOGIN;
        GRANT fraud_agent, payments_admin TO hoop_gateway;""")
    cluster.psql("postgres", "CREATE DATABASE payments")
    cluster.psql("payments", f"""
        CREATE EXTENSION hoop;
        CREATE TABLE public.payments(id bigint, card_number text, cardholder text, amount numeric(12,2),
                                     note text, created_at timestamptz);
        INSERT INTO public.payments VALUES (1, '{PAN}', 'Ada', 10.00, NULL, now());
        GRANT SELECT ON public.payments TO fraud_agent, payments_admin;""")
    cluster.psql("payments", "SELECT hoop_mask('public.payments'::regclass, 'card_number', 'pan_last4')")
    gateway = Gateway(cluster, base / "gw", mappings=MAPPINGS, session_key=keys / "session-signing.key")
    gateway.start()
    try:
        yield cluster, gateway
    finally:
        gateway.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def via_gateway(gateway, group, sub="agent-x"):
    return (f"host=127.0.0.1 port={gateway.port} dbname=payments user={sub} "
            f"password={gateway.token(sub=sub, group=group)}")


def test_fraud_agent_sees_masked_card_numbers(ext_stack):
    _, gateway = ext_stack
    with psycopg.connect(via_gateway(gateway, "fraud-agents")) as conn:
        (card,) = conn.execute("SELECT card_number FROM public.payments WHERE id = 1 AND amount <= 10000").fetchone()
    assert card != PAN and card.endswith(PAN[-4:]) and "*" in card


def test_payments_admin_may_unmask(ext_stack):
    _, gateway = ext_stack
    with psycopg.connect(via_gateway(gateway, "payments-admins", "admin-x")) as conn:
        (card,) = conn.execute("SELECT card_number FROM public.payments WHERE id = 1 AND amount <= 10000").fetchone()
    assert card == PAN


def test_direct_connection_is_refused_by_the_extension(ext_stack):
    cluster, _ = ext_stack
    dsn = (f"host=127.0.0.1 port={cluster.port} dbname=payments user=hoop_gateway "
           f"password={GATEWAY_PASSWORD} options='-c role=fraud_agent'")
    with psycopg.connect(dsn) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT card_number FROM public.payments").fetchall()
    assert "hoop" in str(err.value)
