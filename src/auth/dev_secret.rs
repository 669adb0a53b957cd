//! The development secret: with no `SUPABASE_JWT_SECRET`, Echo generates one once and keeps
//! it under `ECHO_DATA_DIR`, so that `echo-server token` can mint tokens for local use.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::RngCore;

const FILE_NAME: &str = "dev-jwt-secret";

/// Path of the development secret file.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Reads the development secret, creating it (mode 0600) on first use.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<String> {
    let file = path(data_dir);
    if let Ok(existing) = std::fs::read_to_string(&file) {
        let existing = existing.trim().to_string();
        if existing.len() >= 32 {
            return Ok(existing);
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&file)
        .with_context(|| format!("writing {}", file.display()))?;
    f.write_all(secret.as_bytes())?;
    Ok(secret)
}
