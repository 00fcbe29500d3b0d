"""End-to-end fixtures: a real Postgres cluster from the test kit (tests/kit,
through its `hoop-cluster` command: the version $HOOP_PG_VERSION names, else
15; run as the postgres OS user, SCRAM on 127.0.0.1; stopped and removed when
pytest ends, however it ends), the `hoop` binary serving a generated config, and
helpers to mint tokens. Every client test runs the same script of operations
through the gateway and directly, and compares the results.

`Gateway(extra_config=...)` appends TOML to the generated configuration
(`[[rules]]`, `[reviews]`, `[audit]` …); `Gateway.api()` calls the admin
API (the review API lives there)."""
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOP_BIN = Path(os.environ.get("HOOP_BIN", "/tmp/target-proxy/debug/hoop"))
GATEWAY_PASSWORD = "e2e-gateway-pw-81"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(*args):
    return ["runuser", "-u", "postgres", "--", *map(str, args)]


def run(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{res.stdout}{res.stderr}")
    return res.stdout


def kit_tool():
    """The test kit's `hoop-cluster` command, built here (a no-op when it is
    up to date) into $CARGO_TARGET_DIR, as tests/kit/cluster.sh does."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    run(["cargo", "build", "-q", "-p", "hoop-testkit", "--bin", "hoop-cluster"], cwd=ROOT)
    return target / "debug" / "hoop-cluster"


KIT = kit_tool()
# Postgres's programs (psql, pg_dump, pg_config …) of the version under test.
PG_BIN = Path(run([str(KIT), "bin"]).strip())


class Cluster:
    """A cluster in `base` (data in `base/data`, the socket in `base`, the
    server log in `base/log`)."""

    def __init__(self, base: Path):
        self.dir = base
        self.data = base / "data"
        self.port = free_port()

    def start(self, extra_conf=""):
        run([str(KIT), "start", str(self.dir), "--port", str(self.port), "--owner", str(os.getpid()),
             "--set", "max_connections = 100", "--conf", "-"], input=extra_conf)

    def stop(self):
        """Stops the server at once and removes `base`."""
        subprocess.run([str(KIT), "stop", str(self.dir)], capture_output=True)

    def psql(self, db, sql):
        return run(as_postgres(PG_BIN / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-h", self.dir, "-p", self.port, "-d", db, "-c", sql))


class Gateway:
    """`extra_config`: TOML appended to the generated file, or a function of
    the gateway returning it (to name `admin_url`, ports, `dir`)."""

    def __init__(self, cluster: Cluster, base: Path, mappings=None, session_key=None, extra_config=""):
        self.cluster = cluster
        self.dir = base
        self.mappings = mappings or '[[role_mapping]]\ngroup = "fraud-agents"\nrole = "fraud_agent"\n'
        self.session_key = session_key
        self.extra_config = extra_config
        self.port = free_port()
        self.admin_port = free_port()
        self.proc = None

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, value in [("gw.password", GATEWAY_PASSWORD),
                            ("session.key", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="),
                            ("dev.key", "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=")]:
            if name == "session.key" and self.session_key:
                continue
            (self.dir / name).write_text(value + "\n")
            os.chmod(self.dir / name, 0o600)
        session_key = self.session_key or (self.dir / "session.key")
        self.config = self.dir / "hoop.toml"
        self.config.write_text(f"""
[listen]
address = "127.0.0.1:{self.port}"
allow_plaintext = "loopback"
max_failed_logins = 1000

[upstream]
host = "127.0.0.1"
port = {self.cluster.port}
user = "hoop_gateway"
password = {{ file = "gw.password" }}

[identity]
audience = "hoop"
[identity.dev_issuer]
key_file = "dev.key"

{self.mappings}

[session]
signing_key = {{ file = "{session_key}" }}
key_id = "e2e-1"

[admin]
address = "127.0.0.1:{self.admin_port}"
""")
        extra = self.extra_config(self) if callable(self.extra_config) else self.extra_config
        if extra:
            with open(self.config, "a") as f:
                f.write("\n" + extra + "\n")
        log = open(self.dir / "hoop.log", "w")
        self.proc = subprocess.Popen([str(HOOP_BIN), "serve", "-c", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT)
        pending = [self.port, self.admin_port]
        for _ in range(150):
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", pending[0]), timeout=0.2).close()
                pending.pop(0)
                if not pending:
                    return
                continue
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hoop did not start (exit {self.proc.returncode}); {self.dir / 'hoop.log'}:\n"
                           + self.log_tail())

    def log_tail(self, lines=30):
        try:
            return "\n".join((self.dir / "hoop.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def api(self, method, path, token=None, body=None, timeout=15):
        """One admin API call: (HTTP status, parsed JSON body, or the text
        when it is not JSON). POSTs send `body` (default `{}`) as JSON."""
        data = None
        headers = {}
        if method != "GET":
            data = json.dumps({} if body is None else body).encode()
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.admin_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def token(self, sub="agent-e2e", group="fraud-agents", ttl="30m"):
        return run([str(HOOP_BIN), "token", "mint", "-c", str(self.config), "--sub", sub,
                    "--group", group, "--ttl", ttl]).strip()


class Target:
    """Where a client connects: through the gateway, or directly to Postgres
    as the gateway role with the same role set (`role` startup setting)."""

    def __init__(self, mode, host, port, user, password, role=None):
        self.mode, self.host, self.port, self.user, self.password, self.role = mode, host, port, user, password, role

    def dsn(self):
        opts = f" options='-c role={self.role}'" if self.role else ""
        return f"host={self.host} port={self.port} dbname=payments user={self.user} password={self.password}{opts}"

    def env(self):
        env = dict(os.environ, PGHOST=self.host, PGPORT=str(self.port), PGDATABASE="payments",
                   PGUSER=self.user, PGPASSWORD=self.password)
        if self.role:
            env["PGOPTIONS"] = f"-c role={self.role}"
        return env


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    base = Path(f"/tmp/hoop-e2e-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    cluster = Cluster(base / "pg")
    cluster.start()
    cluster.psql("postgres", f"""
        CREATE ROLE hoop_gateway LOGIN NOINHERIT PASSWORD '{GATEWAY_PASSWORD}';
        CREATE ROLE fraud_agent NOLOGIN;
        GRANT fraud_agent TO hoop_gateway;""")
    cluster.psql("postgres", "CREATE DATABASE payments")
    cluster.psql("payments", "GRANT CREATE ON DATABASE payments TO fraud_agent; GRANT ALL ON SCHEMA public TO fraud_agent")
    gateway = Gateway(cluster, base / "gw")
    gateway.start()
    try:
        yield cluster, gateway
    finally:
        gateway.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def targets(stack):
    cluster, gateway = stack
    return {
        "gateway": Target("gateway", "127.0.0.1", gateway.port, "agent-e2e", gateway.token()),
        "direct": Target("direct", "127.0.0.1", cluster.port, "hoop_gateway", GATEWAY_PASSWORD, "fraud_agent"),
    }
