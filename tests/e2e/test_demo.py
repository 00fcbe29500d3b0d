"""`hoop demo` end to end, as the README's Quick start runs it: cluster under
.hoop/demo (port 54329), gateway on 6432, admin on 8432, the printed psql line
works, SIGTERM stops the gateway and the cluster. Needs those ports free."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from conftest import HOOP_BIN, PG_BIN, as_postgres


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_demo_serves_and_stops_everything():
    for port in (54329, 6432, 8432):
        assert port_free(port), f"port {port} is in use (a running `hoop demo`?); the demo test needs it"
    cwd = Path(f"/tmp/hoop-demo-test-{os.getpid()}")
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(mode=0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUST_")}
    proc = subprocess.Popen([str(HOOP_BIN), "demo"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        out = "".join(lines)
        assert "Press Ctrl-C" in out, out
        assert "--sub agent-7 --group fraud-agents" in out
        assert 'psql "host=127.0.0.1 port=6432 dbname=payments user=agent-7"' in out
        config = cwd / ".hoop/demo/hoop.toml"
        assert config.is_file()
        assert oct((cwd / ".hoop/demo/gateway.password").stat().st_mode & 0o777) == "0o600"
        token = subprocess.run([str(HOOP_BIN), "token", "mint", "-c", str(config), "--sub", "agent-7",
                                "--group", "fraud-agents"], capture_output=True, text=True, check=True).stdout.strip()
        # The shipped rules send reads of large payments to review: psql
        # waits, a reviewer approves with the printed commands, the rows come.
        assert "reviews approve -c .hoop/demo/hoop.toml REVIEW_ID" in out, out
        held = subprocess.Popen(["psql", "host=127.0.0.1 port=6432 dbname=payments user=agent-7", "-X", "-A",
                                 "-t", "-c", "select count(*) from payments"],
                                env=dict(env, PGPASSWORD=token), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        reviewer = subprocess.run([str(HOOP_BIN), "token", "mint", "-c", str(config), "--sub", "alice",
                                   "--group", "reviewers"], capture_output=True, text=True,
                                  check=True).stdout.strip()
        review_env = dict(env, HOOP_TOKEN=reviewer)
        review_id = None
        for _ in range(100):
            listed = subprocess.run([str(HOOP_BIN), "reviews", "list", "-c", str(config)], cwd=cwd,
                                    env=review_env, capture_output=True, text=True)
            found = re.search(r"r-[0-9a-f]{16}", listed.stdout)
            if found:
                review_id = found.group(0)
                break
            time.sleep(0.1)
        assert review_id, listed.stdout + listed.stderr
        assert held.poll() is None, "psql must wait while its statement is held"
        approved = subprocess.run([str(HOOP_BIN), "reviews", "approve", "-c", str(config), review_id],
                                  cwd=cwd, env=review_env, capture_output=True, text=True)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        stdout, stderr = held.communicate(timeout=30)
        assert held.returncode == 0 and int(stdout.strip()) >= 100, stdout + stderr
        assert "statement held for review " + review_id in stderr, stderr
        # DROP TABLE payments is blocked by the demo's rule.
        res = subprocess.run(["psql", "host=127.0.0.1 port=6432 dbname=payments user=agent-7", "-X", "-A", "-t",
                              "-c", "drop table payments"],
                             env=dict(env, PGPASSWORD=token), capture_output=True, text=True)
        assert res.returncode != 0 and "block-drop-payments" in res.stderr, res.stdout + res.stderr
        res = subprocess.run(["psql", "host=127.0.0.1 port=6432 dbname=payments user=agent-7", "-X", "-A", "-t",
                              "-c", "select count(*), current_user from payments where amount <= 10000"],
                             env=dict(env, PGPASSWORD=token), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        count, user = res.stdout.strip().split("|")
        assert int(count) >= 100 and user == "fraud_agent"
        # tests/run.sh installs the extension: the demo must run with it.
        assert "WARNING: the hoop extension is NOT installed" not in out, out
        res = subprocess.run(["psql", "host=127.0.0.1 port=6432 dbname=payments user=agent-7", "-X", "-A", "-t",
                              "-c", "select card_number from payments where amount <= 10000 order by id limit 1"],
                             env=dict(env, PGPASSWORD=token), capture_output=True, text=True)
        card = res.stdout.strip()
        assert res.returncode == 0 and card.startswith("*") and card[-4:].isdigit(), res.stdout + res.stderr
        # The printed DBA line: a direct connection with a role that may read
        # payments meets the extension's refusal, not the data.
        assert "-c 'set role fraud_agent' -c 'select * from payments limit 3'" in out, out
        password = (cwd / ".hoop/demo/gateway.password").read_text().strip()
        res = subprocess.run(["psql", "host=127.0.0.1 port=54329 dbname=payments user=hoop_gateway", "-X",
                              "-c", "set role fraud_agent", "-c", "select * from payments limit 3"],
                             env=dict(env, PGPASSWORD=password), capture_output=True, text=True)
        assert res.returncode != 0 and "requires a session through the hoop gateway" in res.stderr, \
            res.stdout + res.stderr
        health = subprocess.run(["curl", "-s", "http://127.0.0.1:8432/healthz"], capture_output=True, text=True)
        assert health.stdout.strip() == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "stopping the demo cluster" in rest
    status = subprocess.run(as_postgres(PG_BIN / "pg_ctl", "-D", cwd / ".hoop/demo/pgdata", "status"),
                            capture_output=True, text=True)
    assert status.returncode != 0, "the demo cluster must be stopped"
    for port in (54329, 6432, 8432):
        assert port_free(port)
    shutil.rmtree(cwd, ignore_errors=True)
