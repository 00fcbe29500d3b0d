//! Signs a hoop session token, for tests and manual experiments:
//!
//! ```text
//! sign_session --seed-base64 B64 --pid 12345 --role fraud_agent --db payments \
//!     [--kid test] [--sub agent-7] [--sid ID] [--group G]... [--unmask schema.table.column]... \
//!     [--ttl SECS] [--issued-offset SECS]
//! sign_session --seed-base64 B64 [--kid test] --trusted-key
//! ```
//!
//! `--seed-file PATH` reads the seed from a key file instead. `--trusted-key`
//! prints the `hoop.trusted_keys` entry of the key. A negative `--ttl` signs an
//! already expired token.

use hoop_common::token::{SessionClaims, SessionSigner, TOKEN_VERSION};
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: sign_session (--seed-base64 B64 | --seed-file PATH) [--kid KID] \
         (--trusted-key | --pid PID --role ROLE --db DB [--sub SUB] [--sid SID] \
         [--group G]... [--unmask schema.table.column]... [--ttl SECS] [--issued-offset SECS])"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut seed: Option<String> = None;
    let mut kid = "test".to_string();
    let mut trusted_key = false;
    let mut pid: Option<i32> = None;
    let mut role: Option<String> = None;
    let mut db: Option<String> = None;
    let mut sub = "agent-7".to_string();
    let mut sid: Option<String> = None;
    let mut groups = Vec::new();
    let mut unmask = Vec::new();
    let mut ttl: i64 = 600;
    let mut issued_offset: i64 = 0;

    while let Some(flag) = args.next() {
        if flag == "--trusted-key" {
            trusted_key = true;
            continue;
        }
        let Some(value) = args.next() else {
            eprintln!("sign_session: {flag} needs a value");
            return usage();
        };
        match flag.as_str() {
            "--seed-base64" => seed = Some(value),
            "--seed-file" => match std::fs::read_to_string(&value) {
                Ok(text) => seed = Some(text),
                Err(e) => {
                    eprintln!("sign_session: cannot read {value}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            "--kid" => kid = value,
            "--pid" => match value.parse() {
                Ok(n) => pid = Some(n),
                Err(_) => {
                    eprintln!("sign_session: --pid {value:?} is not a number");
                    return usage();
                }
            },
            "--role" => role = Some(value),
            "--db" => db = Some(value),
            "--sub" => sub = value,
            "--sid" => sid = Some(value),
            "--group" => groups.push(value),
            "--unmask" => unmask.push(value),
            "--ttl" | "--issued-offset" => match value.parse::<i64>() {
                Ok(n) if flag == "--ttl" => ttl = n,
                Ok(n) => issued_offset = n,
                Err(_) => {
                    eprintln!("sign_session: {flag} {value:?} is not a number of seconds");
                    return usage();
                }
            },
            _ => {
                eprintln!("sign_session: unknown option {flag}");
                return usage();
            }
        }
    }

    let Some(seed) = seed else {
        return usage();
    };
    let signer = match SessionSigner::from_seed_base64(&kid, &seed) {
        Ok(signer) => signer,
        Err(e) => {
            eprintln!("sign_session: {e}");
            return ExitCode::FAILURE;
        }
    };
    if trusted_key {
        println!("{}", signer.trusted_key_entry());
        return ExitCode::SUCCESS;
    }
    let (Some(pid), Some(role), Some(db)) = (pid, role, db) else {
        return usage();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let iat = now + issued_offset;
    let claims = SessionClaims {
        v: TOKEN_VERSION,
        kid: kid.clone(),
        sid: sid.unwrap_or_else(|| format!("{:016x}{:016x}", now, pid)),
        sub,
        groups,
        role,
        db,
        pid,
        unmask,
        iat: iat.min(now),
        exp: now + ttl,
    };
    println!("{}", signer.sign(&claims));
    ExitCode::SUCCESS
}
