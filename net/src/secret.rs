//! Shared secrets (the token secret, the cluster secret) from configuration:
//! given inline, read from a file, or — for a run on loopback only — generated
//! once into a file (32 random bytes as hex, mode 0600) and reused by every
//! later run and every process that reads the same file.
//!
//! Nothing here has a default value: a secret printed in the source is a
//! secret every attacker knows. A secret shorter than [`MIN_SECRET`] bytes is
//! refused wherever it comes from, and the message names the settings to set.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use thiserror::Error;

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET: usize = 32;

/// Random bytes in a generated secret (written as twice as many hex digits).
const GENERATED_BYTES: usize = 32;

/// Why a secret is unusable. The message says which setting to set.
#[derive(Debug, Error)]
pub enum SecretError {
    /// No secret configured, and none may be generated here.
    #[error("{0}")]
    Missing(String),
    /// A secret shorter than [`MIN_SECRET`] bytes.
    #[error("{0}")]
    TooShort(String),
    /// A secret file could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// One secret's settings, and how to name them in messages.
#[derive(Debug, Clone)]
pub struct SecretSource<'a> {
    /// What the secret is, for messages: `"token secret"`.
    pub what: &'a str,
    /// The inline setting's name: `"token_secret"` (the file setting is the
    /// same with `_file`).
    pub setting: &'a str,
    /// The environment prefix of the process's settings: `"RINGSIDE_RELAY_"`.
    pub env_prefix: &'a str,
    /// The secret given inline (wins over the file).
    pub inline: Option<&'a str>,
    /// The file holding the secret.
    pub file: Option<&'a Path>,
    /// Whether a missing `file` may be created with a fresh random secret:
    /// only for a process that listens on loopback (a local run).
    pub generate: bool,
    /// Why a missing file is not generated, when `generate` is false
    /// (`"the relay listens on 0.0.0.0:4700, outside loopback"`).
    pub why_not_generated: String,
}

impl SecretSource<'_> {
    /// How to configure this secret, for messages.
    pub fn hint(&self) -> String {
        let env = format!("{}{}", self.env_prefix, self.setting.to_uppercase());
        format!(
            "set {s}_file (e.g. {env}_FILE=/path/to/secret, a file holding {MIN_SECRET} or more \
             random bytes such as the output of `openssl rand -hex 32`) or {s} ({env}=...)",
            s = self.setting
        )
    }

    /// The secret's bytes: inline, else the file's content (surrounding
    /// whitespace trimmed), else — if allowed — a generated file's.
    pub fn resolve(&self) -> Result<Vec<u8>, SecretError> {
        let (bytes, from) = if let Some(s) = self.inline {
            (s.as_bytes().to_vec(), self.setting.to_string())
        } else if let Some(path) = self.file {
            let from = format!("{}_file {}", self.setting, path.display());
            match std::fs::read(path) {
                Ok(b) => (b.trim_ascii().to_vec(), from),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !self.generate {
                        return Err(SecretError::Missing(format!(
                            "no {what}: {from} does not exist and {why}, so none is generated; {hint}",
                            what = self.what,
                            why = self.why_not_generated,
                            hint = self.hint()
                        )));
                    }
                    let hex = generate_hex()?;
                    create_private(path, hex.as_bytes()).map_err(|e| {
                        SecretError::Io(format!("writing the {} to {from}: {e}", self.what))
                    })?;
                    // Re-read: another process may have created it first.
                    let b = std::fs::read(path).map_err(|e| {
                        SecretError::Io(format!("reading the {} from {from}: {e}", self.what))
                    })?;
                    (b.trim_ascii().to_vec(), from)
                }
                Err(e) => {
                    return Err(SecretError::Io(format!(
                        "reading the {} from {from}: {e}",
                        self.what
                    )))
                }
            }
        } else {
            return Err(SecretError::Missing(format!(
                "no {} is configured; {}",
                self.what,
                self.hint()
            )));
        };
        if bytes.len() < MIN_SECRET {
            return Err(SecretError::TooShort(format!(
                "the {} ({from}) is {} bytes long; at least {MIN_SECRET} are required; {}",
                self.what,
                bytes.len(),
                self.hint()
            )));
        }
        Ok(bytes)
    }
}

/// A fresh random secret: 32 bytes from the system's
/// secure random source, as lower-case hex.
pub fn generate_hex() -> Result<String, SecretError> {
    let mut bytes = [0u8; GENERATED_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Io("the system random source failed".into()))?;
    Ok(crate::token::to_hex(&bytes))
}

/// Create `path` with `contents`, readable by its owner only (0600), unless
/// it already exists: then leave it alone and return `false`. The file
/// appears whole or not at all (written aside, then hard-linked into
/// place), so processes starting together agree on one content.
pub fn create_private(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = aside(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replace `path` with `contents` atomically (written aside, then renamed),
/// so a reader sees the old file or the new one, never half of one.
pub fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = aside(path);
    let written = std::fs::write(&tmp, contents).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A unique name beside `path` for writing before moving into place.
fn aside(path: &Path) -> PathBuf {
    let nonce = generate_hex().map_or_else(|_| String::from("0"), |h| h[..16].to_string());
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.{nonce}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ringside-secret-{name}-{}-{}",
            std::process::id(),
            &generate_hex().expect("random")[..8]
        ));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    fn source<'a>(
        inline: Option<&'a str>,
        file: Option<&'a Path>,
        generate: bool,
    ) -> SecretSource<'a> {
        SecretSource {
            what: "token secret",
            setting: "token_secret",
            env_prefix: "RINGSIDE_RELAY_",
            inline,
            file,
            generate,
            why_not_generated: "the relay listens on 0.0.0.0:0, outside loopback".into(),
        }
    }

    #[test]
    fn a_generated_secret_is_random_private_and_reused() {
        let d = dir("gen");
        let path = d.join("sub").join("token-secret");
        let first = source(None, Some(&path), true)
            .resolve()
            .expect("generated");
        assert_eq!(first.len(), 2 * GENERATED_BYTES);
        assert!(first.iter().all(u8::is_ascii_hexdigit));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Reused, even where it would not be generated.
        assert_eq!(
            source(None, Some(&path), false).resolve().expect("read"),
            first
        );
        // Another directory, another secret.
        let other = d.join("other");
        assert_ne!(
            source(None, Some(&other), true).resolve().expect("gen"),
            first
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_short_and_empty_secrets_are_refused_with_what_to_set() {
        let d = dir("refuse");
        let path = d.join("token-secret");
        let e = source(None, Some(&path), false)
            .resolve()
            .expect_err("missing");
        assert!(matches!(e, SecretError::Missing(_)), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("RINGSIDE_RELAY_TOKEN_SECRET_FILE="), "{msg}");
        assert!(msg.contains("outside loopback"), "{msg}");
        assert!(!path.exists(), "nothing generated");
        assert!(matches!(
            source(None, None, true).resolve(),
            Err(SecretError::Missing(_))
        ));
        let short = "a".repeat(MIN_SECRET - 1);
        let e = source(Some(&short), None, true)
            .resolve()
            .expect_err("short");
        assert!(matches!(e, SecretError::TooShort(_)), "{e}");
        assert!(e.to_string().contains("31 bytes"), "{e}");
        assert!(matches!(
            source(Some(""), None, true).resolve(),
            Err(SecretError::TooShort(_))
        ));
        std::fs::write(&path, format!("{short}\n")).expect("write");
        assert!(matches!(
            source(None, Some(&path), true).resolve(),
            Err(SecretError::TooShort(_))
        ));
        let ok = "b".repeat(MIN_SECRET);
        assert_eq!(
            source(Some(&ok), Some(&path), false)
                .resolve()
                .expect("inline wins"),
            ok.as_bytes()
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn create_private_keeps_what_is_there() {
        let d = dir("create");
        let path = d.join("f");
        assert!(create_private(&path, b"one").expect("create"));
        assert!(!create_private(&path, b"two").expect("exists"));
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
        replace_file(&path, b"three").expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"three");
        let left: Vec<_> = std::fs::read_dir(&d).expect("ls").collect();
        assert_eq!(left.len(), 1, "no temporary files left behind");
        let _ = std::fs::remove_dir_all(&d);
    }
}
