//! Login against a real OpenID provider: npm `oidc-provider` on loopback
//! issuing client-credentials JWT access tokens (tests/node/oidc-server.mjs).
//! Discovery + JWKS, refused forgeries, and key rotation at the provider.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::*;

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/node")
}

struct Provider {
    child: Child,
    port: u16,
    keys: PathBuf,
}

impl Provider {
    async fn start(port: u16, keys: &Path, rotate: bool) -> Provider {
        let dir = node_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "npm packages missing in {}: run tests/setup.sh",
            dir.display()
        );
        let mut cmd = Command::new("node");
        cmd.current_dir(&dir)
            .arg("oidc-server.mjs")
            .arg(port.to_string())
            .arg(keys)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if rotate {
            cmd.arg("--rotate");
        }
        // Wrapped at once so Drop kills the provider on every path.
        let provider = Provider {
            child: cmd.spawn().expect("node"),
            port,
            keys: keys.to_owned(),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return provider;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("oidc-provider did not start on port {port}");
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn token(&self, client: &str) -> String {
        let body = format!("grant_type=client_credentials&client_id={client}&client_secret={client}-secret&scope=db");
        let resp: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/token", self.issuer()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{resp}"))
            .to_owned()
    }

    fn sign(&self, claims: &serde_json::Value, stray: bool) -> String {
        let mut cmd = Command::new("node");
        cmd.current_dir(node_dir())
            .arg("sign.mjs")
            .arg(&self.keys)
            .arg(claims.to_string());
        if stray {
            cmd.arg("--stray-key");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn stop(self) {
        drop(self);
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn claims(issuer: &str, aud: &str, exp_in: i64) -> serde_json::Value {
    let now = now_unix();
    json!({"iss": issuer, "aud": aud, "sub": "ci-fraud", "client_id": "ci-fraud", "iat": now, "exp": now + exp_in, "groups": ["fraud-agents"]})
}

async fn expect_refused(gw: &TestGateway, token: &str, code: &str, needle: &str) {
    let m = Raw::login_error(gw.addr, token).await;
    assert_eq!(m.error_code().as_deref(), Some(code), "{m:?}");
    let text = m.field(b'M').unwrap();
    assert!(text.contains(needle), "{text:?} should mention {needle:?}");
}

async fn current_user(gw: &TestGateway, token: &str) -> String {
    let (mut raw, _) = Raw::login(gw.addr, "ci", token).await;
    raw.send(&query("select current_user")).await;
    let msgs = raw.until(b'Z').await;
    let row = msgs.iter().find(|m| m.tag == b'D').unwrap();
    String::from_utf8_lossy(&row.body[6..]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_tokens_log_in_and_forgeries_do_not() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("hoop-oidc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.json");
    let _ = std::fs::remove_file(&keys);
    let provider = Provider::start(port, &keys, false).await;
    let issuer = provider.issuer();
    let gw = start_gateway(GatewayOptions {
        extra_listen: "max_failed_logins = 1000\n".into(),
        identity: Some(format!(
            "[identity]\nissuer = \"{issuer}\"\naudience = \"urn:hoop\"\ngroups_claim = \"groups\"\nleeway = \"5s\"\njwks_min_refresh_interval = \"1s\"\n"
        )),
        ..Default::default()
    })
    .await;

    // A real client-credentials access token logs in and maps to a role.
    let token = provider.token("ci-fraud").await;
    assert_eq!(current_user(&gw, &token).await, "fraud_agent");
    assert_eq!(
        current_user(&gw, &provider.token("ci-admin").await).await,
        "payments_admin"
    );
    expect_refused(
        &gw,
        &provider.token("ci-nobody").await,
        "28000",
        "[interns]",
    )
    .await;

    // Tampered: the payload changed after signing.
    let mut parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: serde_json::Value =
        serde_json::from_slice(&e.decode(parts[1]).unwrap()).unwrap();
    payload["groups"] = json!(["payments-admins"]);
    let forged = e.encode(payload.to_string());
    parts[1] = &forged;
    expect_refused(&gw, &parts.join("."), "28P01", "signature").await;

    // Correctly signed by the provider's key, but expired / for another audience / from another issuer.
    expect_refused(
        &gw,
        &provider.sign(&claims(&issuer, "urn:hoop", -60), false),
        "28P01",
        "expired",
    )
    .await;
    expect_refused(
        &gw,
        &provider.sign(&claims(&issuer, "urn:other", 600), false),
        "28P01",
        "audience",
    )
    .await;
    expect_refused(
        &gw,
        &provider.sign(&claims("http://127.0.0.1:1", "urn:hoop", 600), false),
        "28P01",
        "issuer",
    )
    .await;
    // Baseline for the signer: a fresh, correct token from the same key works.
    assert_eq!(
        current_user(
            &gw,
            &provider.sign(&claims(&issuer, "urn:hoop", 600), false)
        )
        .await,
        "fraud_agent"
    );

    // alg none, and HS256 keyed with the provider's public key material.
    let header: serde_json::Value =
        serde_json::from_slice(&e.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    expect_refused(
        &gw,
        &unsigned_jwt(
            &json!({"alg": "none", "kid": kid}),
            &claims(&issuer, "urn:hoop", 600),
            b"",
        ),
        "28P01",
        "not accepted",
    )
    .await;
    let jwks: serde_json::Value = reqwest::get(format!("{issuer}/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public_n = jwks["keys"][0]["n"].as_str().unwrap().to_owned();
    for secret in [public_n.as_bytes(), jwks["keys"][0].to_string().as_bytes()] {
        expect_refused(
            &gw,
            &hs256(
                &json!({"alg": "HS256", "kid": kid}),
                &claims(&issuer, "urn:hoop", 600),
                secret,
            ),
            "28P01",
            "not accepted",
        )
        .await;
    }

    // A key the provider never published.
    expect_refused(
        &gw,
        &provider.sign(&claims(&issuer, "urn:hoop", 600), true),
        "28P01",
        "does not publish",
    )
    .await;

    // Rotation: the provider restarts signing with a new key (old one still published).
    provider.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the refresh rate limit
    let provider = Provider::start(port, &keys, true).await;
    let rotated = provider.token("ci-fraud").await;
    let new_kid = {
        let h: serde_json::Value =
            serde_json::from_slice(&e.decode(rotated.split('.').next().unwrap()).unwrap()).unwrap();
        h["kid"].as_str().unwrap().to_owned()
    };
    assert_ne!(new_kid, kid, "the provider signs with the new key");
    assert_eq!(
        current_user(&gw, &rotated).await,
        "fraud_agent",
        "new kid picked up by a JWKS refresh"
    );
    assert_eq!(
        current_user(&gw, &token).await,
        "fraud_agent",
        "old key still published"
    );
    provider.stop();
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
