//! Session tokens: what the extension accepts and, above all, what it refuses.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hoop_common::token::{
    KeyError, SessionClaims, SessionSigner, TokenError, TrustedKeys, TOKEN_VERSION,
};

const NOW: i64 = 1_700_000_000;
const PID: i32 = 4242;

fn signer(kid: &str, seed_byte: u8) -> SessionSigner {
    SessionSigner::from_seed(kid, &[seed_byte; 32])
}

fn claims() -> SessionClaims {
    SessionClaims {
        v: TOKEN_VERSION,
        kid: String::new(),
        sid: "0123456789abcdef0123456789abcdef".into(),
        sub: "agent-7".into(),
        groups: vec!["fraud-agents".into()],
        role: "fraud_agent".into(),
        db: "payments".into(),
        pid: PID,
        unmask: vec!["public.payments.card_number".into()],
        iat: NOW - 10,
        exp: NOW + 900,
    }
}

fn trusting(signers: &[&SessionSigner]) -> TrustedKeys {
    let text = signers
        .iter()
        .map(|s| s.trusted_key_entry())
        .collect::<Vec<_>>()
        .join(",");
    TrustedKeys::parse(&text).expect("valid trusted keys")
}

/// Re-encodes the claims part with `edit` applied to its JSON, keeping the
/// original signature.
fn with_edited_claims(token: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let json = URL_SAFE_NO_PAD.decode(parts[1]).expect("claims base64");
    let mut value: serde_json::Value = serde_json::from_slice(&json).expect("claims JSON");
    edit(&mut value);
    let json = serde_json::to_vec(&value).expect("JSON");
    format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(json), parts[2])
}

/// Signs arbitrary JSON as claims, for tests of what a valid signature over
/// wrong claims leads to.
fn sign_raw(seed_byte: u8, json: &[u8]) -> String {
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[seed_byte; 32]);
    let signed = format!("hoop1.{}", URL_SAFE_NO_PAD.encode(json));
    let signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

#[test]
fn round_trip() {
    let signer = signer("gw-2024", 1);
    let token = signer.sign(&claims());
    assert!(token.starts_with("hoop1."));
    assert_eq!(token.split('.').count(), 3);
    let verified = trusting(&[&signer])
        .verify(&token, PID, NOW)
        .expect("valid token");
    assert_eq!(
        verified,
        SessionClaims {
            kid: "gw-2024".into(),
            ..claims()
        }
    );
    assert!(verified.may_unmask("public", "payments", "card_number"));
    assert!(!verified.may_unmask("public", "payments", "cardholder"));
    assert!(!verified.may_unmask("public", "payment", "s.card_number"));
    assert!(!verified.may_unmask("Public", "payments", "card_number"));
}

#[test]
fn sign_sets_the_key_id() {
    let signer = signer("gw-a", 1);
    let mut lying = claims();
    lying.kid = "gw-b".into();
    let verified = trusting(&[&signer]).verify(&signer.sign(&lying), PID, NOW);
    assert_eq!(verified.map(|c| c.kid), Ok("gw-a".to_owned()));
}

#[test]
fn validity_period() {
    let signer = signer("k", 1);
    let keys = trusting(&[&signer]);
    let token = signer.sign(&claims());
    let exp = NOW + 900;
    assert!(keys.verify(&token, PID, exp - 1).is_ok());
    assert_eq!(
        keys.verify(&token, PID, exp),
        Err(TokenError::Expired { exp, now: exp })
    );
    assert_eq!(
        keys.verify(&token, PID, exp + 3600),
        Err(TokenError::Expired {
            exp,
            now: exp + 3600
        })
    );

    let future = signer.sign(&SessionClaims {
        iat: NOW + 61,
        exp: NOW + 900,
        ..claims()
    });
    assert_eq!(
        keys.verify(&future, PID, NOW),
        Err(TokenError::NotYetValid {
            iat: NOW + 61,
            now: NOW
        })
    );
    let slight_skew = signer.sign(&SessionClaims {
        iat: NOW + 60,
        ..claims()
    });
    assert!(keys.verify(&slight_skew, PID, NOW).is_ok());
    // Extreme times do not overflow.
    assert!(matches!(
        keys.verify(&token, PID, i64::MAX),
        Err(TokenError::Expired { .. })
    ));
    assert!(matches!(
        keys.verify(&token, PID, i64::MIN),
        Err(TokenError::NotYetValid { .. })
    ));
}

#[test]
fn wrong_backend() {
    let signer = signer("k", 1);
    let token = signer.sign(&claims());
    assert_eq!(
        trusting(&[&signer]).verify(&token, PID + 1, NOW),
        Err(TokenError::WrongBackend {
            token_pid: PID,
            backend_pid: PID + 1
        })
    );
}

#[test]
fn wrong_key_and_unknown_key_id() {
    let gateway = signer("gw", 1);
    let impostor = signer("gw", 2);
    let token = impostor.sign(&claims());
    assert_eq!(
        trusting(&[&gateway]).verify(&token, PID, NOW),
        Err(TokenError::BadSignature)
    );
    let other_kid = signer("elsewhere", 2).sign(&claims());
    assert_eq!(
        trusting(&[&gateway]).verify(&other_kid, PID, NOW),
        Err(TokenError::UnknownKeyId("elsewhere".into()))
    );
    assert_eq!(
        TrustedKeys::default().verify(&gateway.sign(&claims()), PID, NOW),
        Err(TokenError::UnknownKeyId("gw".into()))
    );
}

#[test]
fn altered_claims_break_the_signature() {
    let signer = signer("k", 1);
    let keys = trusting(&[&signer]);
    let token = signer.sign(&claims());
    let edits = [
        ("pid", serde_json::json!(1)),
        ("exp", serde_json::json!(NOW + 86_400 * 365)),
        ("role", serde_json::json!("postgres")),
        ("unmask", serde_json::json!(["public.payments.cvv"])),
        ("groups", serde_json::json!(["payments-admins"])),
    ];
    for (field, value) in edits {
        let altered = with_edited_claims(&token, |c| c[field] = value);
        assert_eq!(
            keys.verify(&altered, PID, NOW),
            Err(TokenError::BadSignature),
            "{field}"
        );
    }

    // A flipped byte inside the JSON (the subject's first letter).
    let parts: Vec<&str> = token.split('.').collect();
    let mut json = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64");
    let at = json
        .windows(7)
        .position(|w| w == b"agent-7")
        .expect("subject in claims");
    json[at] ^= 0x01;
    let altered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(&json),
        parts[2]
    );
    assert_eq!(
        keys.verify(&altered, PID, NOW),
        Err(TokenError::BadSignature)
    );

    // A flipped bit in the signature.
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64");
    signature[10] ^= 0x80;
    let altered = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(signature)
    );
    assert_eq!(
        keys.verify(&altered, PID, NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn every_single_character_change_is_refused() {
    let signer = signer("k", 1);
    let keys = trusting(&[&signer]);
    let token = signer.sign(&claims());
    for position in 0..token.len() {
        // One other base64url character (reaches the signature check) and the
        // structural ones (caught by parsing).
        let original = token.as_bytes()[position];
        let other = if original == b'A' { b'B' } else { b'A' };
        for c in [other, b'.', b'=', b' '] {
            if original == c {
                continue;
            }
            let mut altered = token.clone().into_bytes();
            altered[position] = c;
            let altered = String::from_utf8(altered).expect("ASCII");
            assert!(
                keys.verify(&altered, PID, NOW).is_err(),
                "accepted after changing position {position} to {:?}",
                char::from(c)
            );
        }
    }
    // Truncations and extensions too.
    for end in 0..token.len() {
        assert!(
            keys.verify(&token[..end], PID, NOW).is_err(),
            "prefix {end}"
        );
    }
    assert!(keys.verify(&format!("{token}A"), PID, NOW).is_err());
    assert!(keys.verify(&format!("{token}."), PID, NOW).is_err());
    assert!(keys.verify(&format!(" {token}"), PID, NOW).is_err());
}

#[test]
fn key_rotation_with_two_keys() {
    let old = signer("gw-2024", 1);
    let new = signer("gw-2025", 2);
    let keys = TrustedKeys::parse(&format!(
        "  {}\n\t{} ",
        old.trusted_key_entry(),
        new.trusted_key_entry()
    ))
    .expect("two keys");
    assert_eq!(keys.key_ids().collect::<Vec<_>>(), ["gw-2024", "gw-2025"]);
    for signer in [&old, &new] {
        let verified = keys
            .verify(&signer.sign(&claims()), PID, NOW)
            .expect("trusted");
        assert_eq!(verified.kid, signer.kid());
    }
    // Retiring the old key refuses its sessions.
    let only_new = trusting(&[&new]);
    assert_eq!(
        only_new.verify(&old.sign(&claims()), PID, NOW),
        Err(TokenError::UnknownKeyId("gw-2024".into()))
    );
    // A kid naming the other trusted key does not help a forged signature.
    let forged = with_edited_claims(&old.sign(&claims()), |c| c["kid"] = "gw-2025".into());
    assert_eq!(
        keys.verify(&forged, PID, NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn unsupported_versions() {
    let signer = signer("k", 1);
    let keys = trusting(&[&signer]);
    let v2 = signer.sign(&SessionClaims { v: 2, ..claims() });
    assert_eq!(
        keys.verify(&v2, PID, NOW),
        Err(TokenError::UnsupportedVersion(2))
    );
    let token = signer.sign(&claims());
    let hoop2 = token.replacen("hoop1.", "hoop2.", 1);
    assert_eq!(
        keys.verify(&hoop2, PID, NOW),
        Err(TokenError::UnsupportedVersion(2))
    );
}

#[test]
fn strict_claims_even_when_signed() {
    let keys = trusting(&[&signer("k", 1)]);
    let good = serde_json::to_value(SessionClaims {
        kid: "k".into(),
        ..claims()
    })
    .expect("claims");
    let mut extra = good.clone();
    extra["admin"] = true.into();
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("pid");
    let mut wrong_type = good.clone();
    wrong_type["pid"] = "4242".into();
    let mut overflow = good.clone();
    overflow["pid"] = serde_json::json!(1u64 << 40);
    let duplicate = {
        let text = serde_json::to_string(&good).expect("JSON");
        text.replacen("{", "{\"pid\":4242,", 1)
    };
    for json in [
        serde_json::to_vec(&extra).expect("JSON"),
        serde_json::to_vec(&missing).expect("JSON"),
        serde_json::to_vec(&wrong_type).expect("JSON"),
        serde_json::to_vec(&overflow).expect("JSON"),
        duplicate.into_bytes(),
    ] {
        let token = sign_raw(1, &json);
        assert!(
            matches!(keys.verify(&token, PID, NOW), Err(TokenError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(&json)
        );
    }
    assert!(keys
        .verify(
            &sign_raw(1, &serde_json::to_vec(&good).expect("JSON")),
            PID,
            NOW
        )
        .is_ok());
}

#[test]
fn garbage_is_malformed() {
    let keys = trusting(&[&signer("k", 1)]);
    let sig = "A".repeat(86);
    let claims_b64 = URL_SAFE_NO_PAD.encode(br#"{"kid":"k"}"#);
    let huge = format!("hoop1.{}.{sig}", "A".repeat(20_000));
    let cases = [
        String::new(),
        "hoop1".into(),
        "hoop1.".into(),
        "hoop1..".into(),
        "hoop1...".into(),
        "hoopX.a.b".into(),
        "jwt.eyJ.sig".into(),
        format!("hoop1.{claims_b64}"),
        format!("hoop1.{claims_b64}."),
        format!("hoop1.{claims_b64}.{sig}.extra"),
        format!("hoop1.{claims_b64}.AAAA"),
        format!("hoop1.{claims_b64}.{}", "A".repeat(88)),
        format!("hoop1.{claims_b64}.{}", "*".repeat(86)),
        format!("hoop1.{claims_b64}=.{sig}"),
        format!("hoop1.!!!!.{sig}"),
        format!("hoop1.{}.{sig}", URL_SAFE_NO_PAD.encode(b"not json")),
        format!("hoop1.{}.{sig}", URL_SAFE_NO_PAD.encode(b"[1,2,3]")),
        format!("hoop1.{}.{sig}", URL_SAFE_NO_PAD.encode(b"\xff\xfe\x00")),
        format!(
            "hoop1.{}.{sig}",
            URL_SAFE_NO_PAD.encode(br#"{"kid":"a:b"}"#)
        ),
        format!(
            "hoop1.{}.{sig}",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"kid":"{}"}}"#, "k".repeat(65)))
        ),
        format!("hoop1.{}.{sig}", URL_SAFE_NO_PAD.encode("[".repeat(10_000))),
        huge,
        "hoop1.é.ü".into(),
        "hoop99999999999999999999.a.b".into(),
    ];
    for token in &cases {
        let result = keys.verify(token, PID, NOW);
        assert!(
            matches!(result, Err(TokenError::Malformed(_))),
            "{:?} -> {result:?}",
            token.chars().take(80).collect::<String>()
        );
    }
}

#[test]
fn trusted_keys_parsing() {
    let a = signer("a", 1);
    let b = signer("b.2_x-y", 2);
    assert!(TrustedKeys::parse("").expect("empty").is_empty());
    assert!(TrustedKeys::parse(" ,\n, ").expect("blank").is_empty());
    let both = TrustedKeys::parse(&format!(
        "{},{}",
        a.trusted_key_entry(),
        b.trusted_key_entry()
    ))
    .expect("comma separated");
    assert!(!both.is_empty());
    assert_eq!(
        TrustedKeys::parse(&format!(
            "{} {}",
            a.trusted_key_entry(),
            a.trusted_key_entry()
        ))
        .err(),
        Some(KeyError::DuplicateKeyId("a".into()))
    );
    let public = STANDARD.encode(
        a.trusted_key_entry()
            .split_once(':')
            .map(|(_, key)| STANDARD.decode(key).expect("base64"))
            .expect("entry"),
    );
    let malformed = [
        "no-colon".to_owned(),
        format!(":{public}"),
        format!("a b:{public}"),
        format!("a:b:{public}"),
        format!("{}:{public}", "k".repeat(65)),
        "a:not base64!".into(),
        format!("a:{}", public.trim_end_matches('=')),
        format!("a:{}", STANDARD.encode([1u8; 31])),
        format!("a:{}", STANDARD.encode([1u8; 33])),
        // Small-order point: verifies forged signatures, must be refused.
        format!("a:{}", STANDARD.encode([0u8; 32])),
        format!(
            "a:{}",
            STANDARD.encode({
                let mut identity = [0u8; 32];
                identity[0] = 1;
                identity
            })
        ),
    ];
    for text in &malformed {
        assert!(
            matches!(TrustedKeys::parse(text), Err(KeyError::Malformed(_))),
            "{text}"
        );
    }
    // The key text never appears in the error, in case it was a private key.
    let seed_text = STANDARD.encode([9u8; 32]);
    let error = TrustedKeys::parse(&format!("k{seed_text}")).expect_err("no colon");
    assert!(!error.to_string().contains(&seed_text), "{error}");
}

#[test]
fn signer_from_key_file_text() {
    let seed = [5u8; 32];
    let text = format!("  {}\n", STANDARD.encode(seed));
    let from_text = SessionSigner::from_seed_base64("gw", &text).expect("valid seed");
    assert_eq!(
        from_text.trusted_key_entry(),
        SessionSigner::from_seed("gw", &seed).trusted_key_entry()
    );
    assert!(from_text.trusted_key_entry().starts_with("gw:"));
    assert_eq!(from_text.kid(), "gw");
    for bad in [
        "",
        "!!!",
        &STANDARD.encode([5u8; 31]),
        &STANDARD.encode([5u8; 64]),
    ] {
        assert!(matches!(
            SessionSigner::from_seed_base64("gw", bad),
            Err(KeyError::Malformed(_))
        ));
    }
    assert!(SessionSigner::from_seed_base64("bad kid", &text).is_err());
    assert!(SessionSigner::from_seed_base64("", &text).is_err());
    // Debug output shows the public half only.
    let debug = format!("{from_text:?}");
    assert!(!debug.contains(&STANDARD.encode(seed)), "{debug}");
}

#[test]
fn errors_read_as_instructions() {
    let messages = [
        TokenError::UnknownKeyId("gw".into()).to_string(),
        TokenError::Expired { exp: 1, now: 2 }.to_string(),
        TokenError::WrongBackend {
            token_pid: 1,
            backend_pid: 2,
        }
        .to_string(),
        TokenError::Malformed("x").to_string(),
        KeyError::DuplicateKeyId("gw".into()).to_string(),
    ];
    assert!(messages[0].contains("hoop.trusted_keys"));
    assert!(messages[1].contains("reconnect"));
    assert!(messages[2].contains("pid 1") && messages[2].contains("(2)"));
    assert!(messages[3].contains("hoop.session"));
    assert!(messages[4].contains("hoop.trusted_keys"));
}

/// Held in statics (extension) and shared between tasks (gateway).
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<TrustedKeys>();
    shareable::<SessionSigner>();
};
