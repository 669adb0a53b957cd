//! Shared plumbing: target validation (loopback only), JWT minting, secrets,
//! file-descriptor limits, output paths, source addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use uuid::Uuid;

/// The server under test. Only loopback addresses are accepted.
#[derive(Clone, Debug)]
pub struct Target {
    /// Address we connect to.
    pub addr: SocketAddr,
    /// Value of the `Host` header / authority part of URLs (`127.0.0.1:8000`).
    pub authority: String,
    /// `http://authority` (no trailing slash).
    pub base: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self> {
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("invalid --url {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("--url scheme {other:?} is not supported (use http://)"),
            None => bail!("--url must start with http://"),
        }
        let host = uri.host().context("--url has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        let host_trim = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = if host_trim.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host_trim.parse().with_context(|| {
                format!("--url host {host:?} must be an IP literal or localhost")
            })?
        };
        if !ip.is_loopback() {
            bail!(
                "refusing to target {ip}: only loopback addresses (127.0.0.0/8, ::1) are allowed"
            );
        }
        let addr = SocketAddr::new(ip, port);
        let authority = match ip {
            IpAddr::V4(v4) => format!("{v4}:{port}"),
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        };
        Ok(Self {
            addr,
            base: format!("http://{authority}"),
            authority,
        })
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={}", self.authority, token)
    }
}

/// Source addresses to spread client sockets over: 127.0.0.1 ..= 127.0.0.N.
/// Empty when the target is IPv6 (no binding is done then).
pub fn source_ips(target: &Target, n: u8) -> Result<Vec<IpAddr>> {
    if n == 0 {
        bail!("--source-ips must be at least 1");
    }
    if n > 254 {
        bail!("--source-ips must be at most 254");
    }
    match target.addr.ip() {
        IpAddr::V4(_) => Ok((1..=n)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect()),
        IpAddr::V6(_) => Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]),
    }
}

/// HS256 token minting with the shared Supabase-style secret.
#[derive(Clone)]
pub struct Minter {
    key: EncodingKey,
    header: Header,
    ttl_secs: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    aud: &'a str,
    role: &'a str,
    email: &'a str,
    iat: u64,
    exp: u64,
}

impl Minter {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            header: Header::new(Algorithm::HS256),
            ttl_secs,
        }
    }

    pub fn token(&self, user: &Uuid, email: &str) -> Result<String> {
        let now = unix_secs();
        let sub = user.to_string();
        let claims = Claims {
            sub: &sub,
            aud: "authenticated",
            role: "authenticated",
            email,
            iat: now,
            exp: now + self.ttl_secs,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).context("minting JWT")
    }
}

/// Secret from `--secret`, `--secret-file` or the `SUPABASE_JWT_SECRET` env var.
pub fn load_secret(secret: Option<&str>, secret_file: Option<&Path>) -> Result<Vec<u8>> {
    if let Some(path) = secret_file {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("reading --secret-file {}", path.display()))?;
        let s = raw.trim_end_matches(['\r', '\n']);
        if s.is_empty() {
            bail!("--secret-file {} is empty", path.display());
        }
        return Ok(s.as_bytes().to_vec());
    }
    match secret {
        Some(s) if !s.is_empty() => Ok(s.as_bytes().to_vec()),
        _ => bail!(
            "a JWT secret is required: --secret, --secret-file or SUPABASE_JWT_SECRET in the environment"
        ),
    }
}

pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: could not raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// Default results directory: `load-tests/results` when run from the workspace
/// root, `results` when run from inside `load-tests/`, else next to the crate sources.
pub fn default_results_dir() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if cwd.join("load-tests").join("Cargo.toml").is_file() {
        return PathBuf::from("load-tests").join("results");
    }
    if cwd.file_name().is_some_and(|n| n == "load-tests") && cwd.join("Cargo.toml").is_file() {
        return PathBuf::from("results");
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if manifest.is_dir() {
        return manifest.join("results");
    }
    PathBuf::from("results")
}

pub fn timestamp_slug() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

pub fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `--out` if given, else `<results>/<name>-<timestamp>[-p<I>of<K>].json`.
pub fn output_path(out: Option<&Path>, name: &str, proc_index: u32, proc_count: u32) -> PathBuf {
    if let Some(p) = out {
        return p.to_path_buf();
    }
    let suffix = if proc_count > 1 {
        format!("-p{proc_index}of{proc_count}")
    } else {
        String::new()
    };
    default_results_dir().join(format!("{name}-{}{suffix}.json", timestamp_slug()))
}

/// Sleep until a wall-clock unix time (seconds); returns false if it had already passed.
pub async fn sleep_until_unix(at: u64) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = Duration::from_secs(at);
    if at <= now {
        return false;
    }
    tokio::time::sleep(at - now).await;
    true
}

/// Keeps the first few distinct error messages for the summary.
#[derive(Default)]
pub struct ErrorSamples {
    inner: std::sync::Mutex<Vec<String>>,
    full: std::sync::atomic::AtomicBool,
}

impl ErrorSamples {
    const MAX: usize = 20;

    pub fn add(&self, msg: impl Into<String>) {
        use std::sync::atomic::Ordering;
        if self.full.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut v) = self.inner.lock() {
            let m = msg.into();
            if v.len() < Self::MAX && !v.contains(&m) {
                v.push(m);
            }
            if v.len() >= Self::MAX {
                self.full.store(true, Ordering::Relaxed);
            }
        }
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.inner.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback() {
        assert!(Target::parse("http://127.0.0.1:8000").is_ok());
        assert!(Target::parse("http://localhost:8000").is_ok());
        assert!(Target::parse("http://[::1]:8000").is_ok());
        assert!(Target::parse("http://127.3.0.1:8000").is_ok());
        assert!(Target::parse("http://10.0.0.1:8000").is_err());
        assert!(Target::parse("http://example.com").is_err());
        assert!(Target::parse("https://127.0.0.1").is_err());
        let t = Target::parse("http://localhost:9000/").unwrap();
        assert_eq!(t.authority, "127.0.0.1:9000");
        assert_eq!(t.ws_url("abc"), "ws://127.0.0.1:9000/ws?token=abc");
    }

    #[test]
    fn mints_decodable_token() {
        let m = Minter::new(b"secret", 60);
        let u = Uuid::new_v4();
        let t = m.token(&u, "a@b.c").unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.set_audience(&["authenticated"]);
        let d = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &jsonwebtoken::DecodingKey::from_secret(b"secret"),
            &v,
        )
        .unwrap();
        assert_eq!(d.claims["sub"], u.to_string());
        assert_eq!(d.claims["email"], "a@b.c");
    }
}
