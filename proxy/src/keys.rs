//! Key material on disk: `hoop keys generate` (the Ed25519 session-signing
//! key whose public half goes into `hoop.trusted_keys`) and the helpers the
//! demo uses for its secrets. Secret files are created with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hoop_common::token::SessionSigner;

pub const SESSION_KEY_FILE: &str = "session-signing.key";

/// 32 random bytes, base64 (the key-file format of `SessionSigner::from_seed_base64`).
pub fn random_seed_base64() -> std::io::Result<String> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(STANDARD.encode(seed))
}

/// A random password of hex characters (no quoting issues anywhere).
pub fn random_password() -> std::io::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `contents` to a new file readable only by its owner.
pub fn write_secret_file(path: &Path, contents: &str, overwrite: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}

/// Reads a secret file, creating it with `make` when missing.
pub fn ensure_secret_file(
    path: &Path,
    make: impl FnOnce() -> std::io::Result<String>,
) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = make()?;
            write_secret_file(path, &value, false)?;
            Ok(value)
        }
        Err(e) => Err(e),
    }
}

/// The signer for a key file, for printing its `trusted_keys` entry.
pub fn signer_from_file(kid: &str, path: &Path) -> Result<SessionSigner, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    SessionSigner::from_seed_base64(kid, &text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `hoop keys generate`: writes the key file and returns its trusted_keys entry.
pub fn generate(out_dir: &Path, kid: &str, force: bool) -> Result<String, String> {
    if kid.is_empty() || kid.contains([':', ',', ' ']) {
        return Err(format!(
            "key id {kid:?} must be non-empty without ':', ',' or spaces"
        ));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let path = out_dir.join(SESSION_KEY_FILE);
    let seed = random_seed_base64().map_err(|e| e.to_string())?;
    write_secret_file(&path, &seed, force).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} exists; pass --force to replace it (old sessions stay valid only while its public key stays in hoop.trusted_keys)", path.display())
        } else {
            format!("{}: {e}", path.display())
        }
    })?;
    Ok(signer_from_file(kid, &path)?.trusted_key_entry())
}
