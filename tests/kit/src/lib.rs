//! One way to run a real PostgreSQL cluster, for every caller: the Rust
//! tests, the Python tests and the shell scripts (through the
//! `hoop-cluster` command, `tests/kit/cluster.sh`), the benchmarks and
//! `hoop demo`.
//!
//! The conventions, in one place:
//!
//! - **Version**: `$HOOP_PG_VERSION` (15, 17 or 18), else 15; or named by
//!   the caller. Version N's binaries are `$HOOP_PG{N}_BIN`, else the
//!   `HOOP_PG{N}_BIN` line of `$HOOP_CACHE/env.sh` (written by
//!   `scripts/setup.sh`), else Debian's `/usr/lib/postgresql/N/bin`.
//! - **Missing Postgres fails**, with a message naming `scripts/setup.sh`.
//!   Nothing skips: a Rust test cannot report "skipped", and a test that
//!   passes without running cannot fail.
//! - **The `postgres` OS user runs the server** when we are root (Postgres
//!   refuses root); otherwise we run it ourselves.
//! - **Layout**: a cluster lives in one directory: `data/` (PGDATA), the
//!   Unix socket in the directory itself, the server log in `log`, and
//!   `cluster.env` (what `hoop-cluster env` prints). A free port on
//!   127.0.0.1; `local` logins by peer (or trust), `host` logins on
//!   127.0.0.1 by SCRAM (or trust); UTF8, `C.UTF-8`; `fsync = off` unless
//!   durable. The kit's settings are in `data/hoop-cluster.conf`, included
//!   from `postgresql.conf`; the caller's settings come after its own.
//! - **Cleanup**: a cluster is stopped (immediate) and its directory removed
//!   when it is dropped, or stopped with `hoop-cluster stop`, or — when it
//!   has an owner process (a test binary's shared cluster, a script, pytest)
//!   — when that process ends, however it ends. `keep` clusters (the demo's)
//!   are never removed.

mod cluster;
mod postgres;
mod run;

pub use cluster::{Auth, Builder, Cluster};
pub use postgres::{Postgres, DEFAULT_VERSION};
pub use run::{running_as_root, server_user_can_reach, Error};
