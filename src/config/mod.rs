//! Settings read from the environment (and `.env`), validated once at start-up.
//!
//! Every variable is documented in the README's configuration table; a bad value stops the
//! process with a message that names the variable.

pub mod limits;
pub mod storage;
pub mod video;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

pub use limits::{Cidr, LimitSettings};
pub use storage::{StorageBackend, StorageSettings};
pub use video::VideoSettings;

/// Where the database lives: the embedded SQLite file or a Postgres server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    /// `postgres://` or `postgresql://` URL.
    Postgres,
    /// A SQLite file path (or `sqlite://path`).
    Sqlite,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// All runtime configuration of one Echo node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address the HTTP server binds to.
    pub host: IpAddr,
    /// Port the HTTP server binds to (0 picks a free one; tests do this).
    pub port: u16,
    /// Folder for the SQLite file, the development secret and local storage.
    pub data_dir: PathBuf,
    /// Database URL: Postgres URL or SQLite file path.
    pub database_url: String,
    /// Which backend `database_url` selects.
    pub database_kind: DatabaseKind,
    /// Maximum connections in the database pool.
    pub database_pool_size: usize,
    /// How long a request waits for a pooled connection before answering 503.
    pub database_timeout: Duration,
    /// `DATABASE_WRITE_LANES`: message batches written at once (each holds one connection
    /// while it commits; a chat always uses the same lane).
    pub database_write_lanes: usize,
    /// `DATABASE_WRITE_BATCH`: most messages stored in one batch.
    pub database_write_batch: usize,
    /// Shared HS256 secret of the Supabase project.
    pub jwt_secret: Option<String>,
    /// JWKS document URL for asymmetric keys.
    pub jwks_url: Option<String>,
    /// JWKS document on disk, for asymmetric keys without a network fetch.
    pub jwks_file: Option<PathBuf>,
    /// How often the JWKS document is fetched again.
    pub jwks_refresh: Duration,
    /// Required `iss` claim, when set.
    pub jwt_issuer: Option<String>,
    /// `DEV_MODE_ALLOW_REMOTE`: development mode (no authentication configured) may run on a
    /// non-loopback `HOST`. Off by default: such a server refuses to start.
    pub dev_mode_allow_remote: bool,
    /// Required `aud` claim.
    pub jwt_audience: String,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// This node's name in logs, `welcome` frames and metrics.
    pub node_id: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Origins allowed by CORS and by the WebSocket `Origin` check; empty allows none
    /// cross-origin (same-origin and non-browser clients always work).
    pub cors_allowed_origins: Vec<String>,
    /// Largest JSON body accepted, in bytes (over it: 413).
    pub max_json_bytes: usize,
    /// HTTP worker threads (default: number of cores).
    pub workers: usize,
    /// `TCP_NODELAY` on accepted sockets: small frames go out at once instead of waiting for
    /// the peer's delayed ACK (Nagle); off trades that latency for fewer packets.
    pub tcp_nodelay: bool,
    /// How many missed messages `subscribe` with `since_seq` replays at most.
    pub recovery_limit: i64,
    /// WebSocket heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Time without a pong before a socket is closed.
    pub client_timeout: Duration,
    /// Largest client frame, in bytes (over it: close 1009).
    pub max_frame_bytes: usize,
    /// Sustained client frames per second before `rate_limited`.
    pub rate_per_sec: u32,
    /// Burst of client frames allowed above the sustained rate.
    pub rate_burst: u32,
    /// Per-session outbound queue bound, in bytes (over it: close 4008).
    pub outbound_queue_bytes: usize,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Redis URL; set → the Redis broker (cross-node), unset → in-process. With
    /// [`redis_cluster`](Self::redis_cluster), a comma-separated list of seed nodes.
    pub redis_url: Option<String>,
    /// `REDIS_URL` names a Redis Cluster (default: when it lists more than one URL): the cluster
    /// client, and sharded pub/sub on each channel's shard.
    pub redis_cluster: bool,
    /// Prefix of Echo's Redis channel names (isolates deployments sharing one Redis).
    pub redis_channel_prefix: String,
    /// `/health` answers 503 while Redis is unreachable (default: 200 with the broker degraded).
    pub redis_strict_health: bool,
    /// Sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, Redis 7+) instead of `PUBLISH`/`SUBSCRIBE`.
    pub redis_sharded_pubsub: bool,
    /// With Redis: a node silent this long counts as gone, and its users leave their rooms.
    pub presence_ttl: Duration,
    /// AI replies: provider, model, prompt budget, concurrency limits and timeouts.
    pub ai: AiSettings,
    /// Object storage (local disk or GCS), upload limits and signed URLs.
    pub storage: StorageSettings,
    /// Video jobs: workers, leases, per-user upload limits.
    pub video: VideoSettings,
    /// Per-client limits at the edge: request rates, sockets per user, body deadlines.
    pub limits: LimitSettings,
}

/// A configuration problem, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl Settings {
    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_map(&std::env::vars().collect())
    }

    /// Builds settings from a variable map; tests use this to configure an app in isolation.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| value(env, k);
        let data_dir = PathBuf::from(get("ECHO_DATA_DIR").unwrap_or_else(|| "./data".into()));
        let (database_url, database_kind) = database_of(env, &data_dir)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError {
                    var: "LOG_FORMAT",
                    reason: format!("{other:?} is not one of pretty, json"),
                })
            }
        };
        let jwks_url = http_url(env, "JWT_JWKS_URL")?;
        let jwt_secret = get("SUPABASE_JWT_SECRET");
        let jwks_file = get("JWT_JWKS_FILE").map(PathBuf::from);
        let jwt_issuer = get("JWT_ISSUER");
        let host = parse(env, "HOST", IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let dev_mode_allow_remote = parse(env, "DEV_MODE_ALLOW_REMOTE", false)?;
        let (default_pool, default_lanes) = match database_kind {
            DatabaseKind::Postgres => (16, 4),
            // One writer at a time is all SQLite allows.
            DatabaseKind::Sqlite => (8, 1),
        };
        let settings = Settings {
            host,
            port: parse(env, "PORT", 8000)?,
            data_dir,
            database_url,
            database_kind,
            database_pool_size: parse(env, "DATABASE_POOL_SIZE", default_pool)?,
            database_timeout: Duration::from_millis(parse(env, "DATABASE_TIMEOUT_MS", 5000)?),
            database_write_lanes: parse(env, "DATABASE_WRITE_LANES", default_lanes)?.max(1),
            database_write_batch: parse(env, "DATABASE_WRITE_BATCH", 256)?.clamp(1, 4096),
            jwt_secret,
            jwks_url,
            jwks_file,
            jwks_refresh: Duration::from_secs(parse(env, "JWT_JWKS_REFRESH_SECS", 600)?),
            jwt_issuer,
            dev_mode_allow_remote,
            jwt_audience: get("JWT_AUDIENCE").unwrap_or_else(|| "authenticated".into()),
            jwt_leeway_secs: parse(env, "JWT_LEEWAY_SECS", 30)?,
            node_id: get("ECHO_NODE_ID").unwrap_or_else(default_node_id),
            log_format,
            cors_allowed_origins: list(env, "CORS_ALLOWED_ORIGINS")
                .into_iter()
                .map(|origin| origin.trim_end_matches('/').to_string())
                .collect(),
            max_json_bytes: parse(env, "MAX_JSON_BYTES", 1024 * 1024)?,
            workers: parse(env, "HTTP_WORKERS", cores)?.max(1),
            tcp_nodelay: parse(env, "TCP_NODELAY", true)?,
            recovery_limit: parse(env, "WS_RECOVERY_LIMIT", 500)?,
            heartbeat_interval: Duration::from_millis(parse(env, "WS_HEARTBEAT_MS", 25_000)?),
            client_timeout: Duration::from_millis(parse(env, "WS_CLIENT_TIMEOUT_MS", 10_000)?),
            max_frame_bytes: parse(env, "WS_MAX_FRAME_BYTES", 65_536)?,
            rate_per_sec: parse(env, "WS_RATE_PER_SEC", 20)?,
            rate_burst: parse(env, "WS_RATE_BURST", 50)?,
            outbound_queue_bytes: parse(env, "WS_OUTBOUND_QUEUE_BYTES", 1024 * 1024)?,
            shutdown_timeout: Duration::from_secs(parse(env, "SHUTDOWN_TIMEOUT_SECS", 10)?),
            redis_cluster: parse(
                env,
                "REDIS_CLUSTER",
                get("REDIS_URL").is_some_and(|u| u.contains(',')),
            )?,
            redis_url: get("REDIS_URL"),
            redis_channel_prefix: get("REDIS_CHANNEL_PREFIX").unwrap_or_else(|| "echo".into()),
            redis_strict_health: parse(env, "REDIS_STRICT_HEALTH", false)?,
            redis_sharded_pubsub: parse(env, "REDIS_SHARDED_PUBSUB", false)?,
            presence_ttl: Duration::from_secs(parse(env, "PRESENCE_TTL_SECS", 30)?.max(1)),
            ai: AiSettings::from_map(env)?,
            storage: StorageSettings::from_map(env)?,
            video: VideoSettings::from_map(env)?,
            limits: LimitSettings::from_map(env)?,
        };
        settings.check_authentication()?;
        Ok(settings)
    }

    /// Refuses an issuer with no key to check it, and development mode ([`Settings::dev_mode`])
    /// on a non-loopback `HOST` unless `DEV_MODE_ALLOW_REMOTE` says so.
    fn check_authentication(&self) -> Result<(), ConfigError> {
        let any_key =
            self.jwt_secret.is_some() || self.jwks_url.is_some() || self.jwks_file.is_some();
        if self.jwt_issuer.is_some() && !any_key {
            return Err(ConfigError {
                var: "JWT_ISSUER",
                reason: "is set but no key verifies tokens: set SUPABASE_JWT_SECRET or \
                         JWT_JWKS_URL/JWT_JWKS_FILE"
                    .into(),
            });
        }
        if self.dev_mode() && !self.host.is_loopback() && !self.dev_mode_allow_remote {
            return Err(ConfigError {
                var: "HOST",
                reason: format!(
                    "{} is not a loopback address and no authentication is configured \
                     (SUPABASE_JWT_SECRET, JWT_JWKS_URL or JWT_JWKS_FILE): development mode, \
                     where anyone can mint a token, only runs on loopback unless \
                     DEV_MODE_ALLOW_REMOTE=true",
                    self.host
                ),
            });
        }
        Ok(())
    }

    /// Development mode: no authentication is configured at all (no shared secret, no JWKS, no
    /// issuer), so a generated secret signs tokens and `POST /dev/token` exists. Any configured
    /// key or issuer means production mode.
    pub fn dev_mode(&self) -> bool {
        self.jwt_secret.is_none()
            && self.jwks_url.is_none()
            && self.jwks_file.is_none()
            && self.jwt_issuer.is_none()
    }
}

/// Which AI provider answers prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiProviderKind {
    /// The built-in development provider: canned, deterministic replies, no account needed.
    Dev,
    /// An OpenAI-compatible endpoint through async-openai.
    OpenAi,
}

/// Settings of AI replies and speech-to-text.
#[derive(Clone)]
pub struct AiSettings {
    /// `AI_PROVIDER`: `openai` when `OPENAI_API_KEY` is set, else `dev`.
    pub provider: AiProviderKind,
    /// `OPENAI_API_KEY`.
    pub openai_api_key: Option<String>,
    /// `OPENAI_BASE_URL`: base of the OpenAI-compatible API (`…/v1`).
    pub openai_base_url: String,
    /// `AI_MODEL`: the chat model used unless a prompt names another allowed one.
    pub model: String,
    /// `AI_ALLOWED_MODELS`: further models a WebSocket `prompt` may ask for.
    pub allowed_models: Vec<String>,
    /// `AI_TRANSCRIPTION_MODEL`: the speech-to-text model.
    pub transcription_model: String,
    /// `AI_SYSTEM_PROMPT`: the system message that opens every prompt (empty: none).
    pub system_prompt: String,
    /// `AI_CONTEXT_TOKEN_BUDGET`: estimated tokens of history (plus system prompt) sent.
    pub context_token_budget: u32,
    /// `AI_MAX_OUTPUT_TOKENS`: cap on a reply's tokens, when set.
    pub max_output_tokens: Option<u32>,
    /// `AI_MAX_CONCURRENT_PER_USER`: replies one user may have in flight (over it: 429).
    pub max_concurrent_per_user: usize,
    /// `AI_MAX_CONCURRENT_PER_NODE`: replies this node streams at once (over it: 429).
    pub max_concurrent_per_node: usize,
    /// `AI_CONNECT_TIMEOUT_MS`: TCP/TLS connect timeout to the provider.
    pub connect_timeout: Duration,
    /// `AI_IDLE_TIMEOUT_MS`: longest wait for the provider's response or its next event.
    pub idle_timeout: Duration,
    /// `AI_MAX_RETRIES`: retries on 429/5xx/connect failures, before the first token only.
    pub max_retries: u32,
    /// `AI_RETRY_BASE_MS`: first retry delay; doubles each retry (with jitter).
    pub retry_base: Duration,
    /// `AI_DEV_TOKENS_PER_SEC`: pacing of the development provider.
    pub dev_tokens_per_sec: f64,
    /// `AI_DEV_FIRST_TOKEN_MS`: the development provider's time to first token.
    pub dev_first_token: Duration,
    /// `AI_DEV_REPLY_TOKENS`: makes every development reply exactly this many tokens.
    pub dev_reply_tokens: Option<usize>,
}

impl std::fmt::Debug for AiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiSettings")
            .field("provider", &self.provider)
            .field(
                "openai_api_key",
                &self.openai_api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("openai_base_url", &self.openai_base_url)
            .field("model", &self.model)
            .field("max_concurrent_per_user", &self.max_concurrent_per_user)
            .field("max_concurrent_per_node", &self.max_concurrent_per_node)
            .finish_non_exhaustive()
    }
}

impl AiSettings {
    /// Reads the `AI_*` and `OPENAI_*` variables.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| value(env, k);
        let openai_api_key = get("OPENAI_API_KEY");
        let provider = provider_of(env)?;
        let openai_base_url = http_url(env, "OPENAI_BASE_URL")?
            .unwrap_or_else(|| "https://api.openai.com/v1".into())
            .trim_end_matches('/')
            .to_string();
        let default_model = match provider {
            AiProviderKind::Dev => "echo-dev",
            AiProviderKind::OpenAi => "gpt-4o-mini",
        };
        let dev_tokens_per_sec: f64 = parse(env, "AI_DEV_TOKENS_PER_SEC", 30.0)?;
        if !(dev_tokens_per_sec.is_finite() && dev_tokens_per_sec > 0.0) {
            return Err(ConfigError {
                var: "AI_DEV_TOKENS_PER_SEC",
                reason: "must be a positive number".into(),
            });
        }
        Ok(AiSettings {
            provider,
            openai_api_key,
            openai_base_url,
            model: get("AI_MODEL").unwrap_or_else(|| default_model.into()),
            allowed_models: list(env, "AI_ALLOWED_MODELS"),
            transcription_model: get("AI_TRANSCRIPTION_MODEL")
                .unwrap_or_else(|| "whisper-1".into()),
            system_prompt: env
                .get("AI_SYSTEM_PROMPT")
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| {
                    "You are Echo, a helpful assistant in a group chat. Answer concisely.".into()
                }),
            context_token_budget: parse(env, "AI_CONTEXT_TOKEN_BUDGET", 8_000)?,
            max_output_tokens: optional::<u64>(env, "AI_MAX_OUTPUT_TOKENS")?
                .map(|v| v.min(u32::MAX as u64) as u32),
            max_concurrent_per_user: parse(env, "AI_MAX_CONCURRENT_PER_USER", 3)?,
            max_concurrent_per_node: parse(env, "AI_MAX_CONCURRENT_PER_NODE", 256)?,
            connect_timeout: Duration::from_millis(parse(env, "AI_CONNECT_TIMEOUT_MS", 10_000)?),
            idle_timeout: Duration::from_millis(parse(env, "AI_IDLE_TIMEOUT_MS", 60_000)?),
            max_retries: parse(env, "AI_MAX_RETRIES", 3)?,
            retry_base: Duration::from_millis(parse(env, "AI_RETRY_BASE_MS", 500)?),
            dev_tokens_per_sec,
            dev_first_token: Duration::from_millis(parse(env, "AI_DEV_FIRST_TOKEN_MS", 250)?),
            dev_reply_tokens: optional::<u64>(env, "AI_DEV_REPLY_TOKENS")?.map(|v| v as usize),
        })
    }
}

/// Where the database is: `DATABASE_URL` (a Postgres URL, a SQLite path or `sqlite://path`),
/// by default `echo.db` in the data folder.
fn database_of(
    env: &HashMap<String, String>,
    data_dir: &std::path::Path,
) -> Result<(String, DatabaseKind), ConfigError> {
    let url = value(env, "DATABASE_URL")
        .unwrap_or_else(|| data_dir.join("echo.db").to_string_lossy().into_owned());
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url, DatabaseKind::Postgres));
    }
    if url.contains("://") && !url.starts_with("sqlite://") {
        return Err(ConfigError {
            var: "DATABASE_URL",
            reason: format!(
                "unsupported scheme in {url:?}: use postgres://… or a SQLite file path"
            ),
        });
    }
    let path = url.strip_prefix("sqlite://").map(str::to_string);
    Ok((path.unwrap_or(url), DatabaseKind::Sqlite))
}

/// `AI_PROVIDER`, by default `openai` when `OPENAI_API_KEY` is set and `dev` otherwise.
fn provider_of(env: &HashMap<String, String>) -> Result<AiProviderKind, ConfigError> {
    let has_key = value(env, "OPENAI_API_KEY").is_some();
    match value(env, "AI_PROVIDER").as_deref() {
        None if has_key => Ok(AiProviderKind::OpenAi),
        None | Some("dev") => Ok(AiProviderKind::Dev),
        Some("openai") if has_key || value(env, "OPENAI_BASE_URL").is_some() => {
            Ok(AiProviderKind::OpenAi)
        }
        Some("openai") => Err(ConfigError {
            var: "AI_PROVIDER",
            reason: "openai needs OPENAI_API_KEY (or an OPENAI_BASE_URL that needs no key)".into(),
        }),
        Some(other) => Err(ConfigError {
            var: "AI_PROVIDER",
            reason: format!("{other:?} is not one of dev, openai"),
        }),
    }
}

/// `var` trimmed, `None` when unset or blank.
pub(crate) fn value(env: &HashMap<String, String>, var: &str) -> Option<String> {
    env.get(var)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `var` as a comma-separated list, each item trimmed, blanks dropped.
fn list(env: &HashMap<String, String>, var: &str) -> Vec<String> {
    value(env, var)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `var`, which must be an `http://` or `https://` URL when set.
pub(crate) fn http_url(
    env: &HashMap<String, String>,
    var: &'static str,
) -> Result<Option<String>, ConfigError> {
    match value(env, var) {
        Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            Err(ConfigError {
                var,
                reason: "must be an http(s) URL".into(),
            })
        }
        url => Ok(url),
    }
}

/// `var` parsed, `None` when unset or blank.
fn optional<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    var: &'static str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match value(env, var) {
        None => Ok(None),
        Some(raw) => raw.parse().map(Some).map_err(|e: T::Err| ConfigError {
            var,
            reason: format!("{raw:?}: {e}"),
        }),
    }
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    format!("{host}-{}", std::process::id())
}

/// Parses `var` from `env`, or `default` when it is unset or blank.
pub(crate) fn parse<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    Ok(optional(env, var)?.unwrap_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_select_an_sqlite_file_in_the_data_dir() {
        let s = Settings::from_map(&env(&[])).unwrap();
        assert_eq!(s.database_kind, DatabaseKind::Sqlite);
        assert_eq!(s.port, 8000);
        assert!(s.database_url.ends_with("echo.db"));
        assert!(s.dev_mode());
    }

    #[test]
    fn development_mode_only_without_any_authentication_and_only_on_loopback() {
        let s = Settings::from_map(&env(&[("JWT_JWKS_FILE", "/etc/jwks.json")])).unwrap();
        assert!(!s.dev_mode(), "a JWKS-only deployment is production");
        let s =
            Settings::from_map(&env(&[("JWT_JWKS_URL", "https://id.example/jwks.json")])).unwrap();
        assert!(!s.dev_mode());
        let s = Settings::from_map(&env(&[("SUPABASE_JWT_SECRET", "s")])).unwrap();
        assert!(!s.dev_mode());
        let err = Settings::from_map(&env(&[("JWT_ISSUER", "https://id.example")])).unwrap_err();
        assert_eq!(err.var, "JWT_ISSUER", "an issuer with no key is refused");
        let err = Settings::from_map(&env(&[("HOST", "0.0.0.0")])).unwrap_err();
        assert_eq!(
            err.var, "HOST",
            "no auth on a public address is refused: {err}"
        );
        assert!(err.to_string().contains("DEV_MODE_ALLOW_REMOTE"));
        let s = Settings::from_map(&env(&[
            ("HOST", "0.0.0.0"),
            ("DEV_MODE_ALLOW_REMOTE", "true"),
        ]))
        .unwrap();
        assert!(s.dev_mode(), "only when explicitly allowed");
        let s =
            Settings::from_map(&env(&[("HOST", "0.0.0.0"), ("SUPABASE_JWT_SECRET", "s")])).unwrap();
        assert!(!s.dev_mode());
        let s = Settings::from_map(&env(&[("HOST", "::1")])).unwrap();
        assert!(s.dev_mode(), "IPv6 loopback is loopback");
    }

    #[test]
    fn a_bad_port_names_the_variable() {
        let err = Settings::from_map(&env(&[("PORT", "eighty")])).unwrap_err();
        assert_eq!(err.var, "PORT");
        assert!(err.to_string().contains("PORT"));
    }

    #[test]
    fn postgres_urls_select_postgres_and_other_schemes_are_refused() {
        let s = Settings::from_map(&env(&[("DATABASE_URL", "postgres://u@h/db")])).unwrap();
        assert_eq!(s.database_kind, DatabaseKind::Postgres);
        let err = Settings::from_map(&env(&[("DATABASE_URL", "mysql://h/db")])).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
    }

    #[test]
    fn ai_defaults_to_the_dev_provider_and_to_openai_when_a_key_is_set() {
        let s = Settings::from_map(&env(&[])).unwrap();
        assert_eq!(s.ai.provider, AiProviderKind::Dev);
        assert_eq!(s.ai.max_concurrent_per_user, 3);
        let s = Settings::from_map(&env(&[("OPENAI_API_KEY", "sk-x")])).unwrap();
        assert_eq!(s.ai.provider, AiProviderKind::OpenAi);
        assert_eq!(s.ai.openai_base_url, "https://api.openai.com/v1");
        assert!(
            !format!("{:?}", s.ai).contains("sk-x"),
            "the key is not logged"
        );
        let err = Settings::from_map(&env(&[("AI_PROVIDER", "magic")])).unwrap_err();
        assert_eq!(err.var, "AI_PROVIDER");
        let err = Settings::from_map(&env(&[("AI_DEV_TOKENS_PER_SEC", "0")])).unwrap_err();
        assert_eq!(err.var, "AI_DEV_TOKENS_PER_SEC");
    }
}
