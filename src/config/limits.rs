//! Settings of the per-client limits at the HTTP edge (`crate::limits` enforces them): address
//! ranges, request rates, sockets per user and body deadlines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::{parse, ConfigError};

/// An address range (`10.0.0.0/8`, `::1`, `192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` lies in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range"))?;
        let net = canonical(net);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

/// `ip`, with an IPv4-mapped IPv6 address turned into its IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses a comma-separated list of addresses/ranges; `none` is the empty list.
pub fn parse_cidrs(var: &'static str, raw: &str) -> Result<Vec<Cidr>, ConfigError> {
    if raw.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|reason| ConfigError { var, reason }))
        .collect()
}

/// Settings of the edge limits (see the README's Security section).
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// `TRUSTED_PROXIES`: peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Cidr>,
    /// `RATE_LIMIT_EXEMPT`: addresses the per-address limits do not apply to.
    pub exempt: Vec<Cidr>,
    /// `IP_REST_RATE_PER_SEC` / `IP_REST_BURST`: REST requests per address (0: off).
    pub rest_rate: (u32, u32),
    /// `IP_WS_CONNECT_RATE_PER_SEC` / `IP_WS_CONNECT_BURST`: WebSocket upgrades per address.
    pub ws_connect_rate: (u32, u32),
    /// `WS_MAX_SESSIONS_PER_USER`: sockets one user may hold on this node (0: no cap).
    pub sessions_per_user: usize,
    /// `HTTP_HEADER_TIMEOUT_MS`: time to receive a request's head (408 after it).
    pub header_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_MS`: time to receive a whole (non-upload) request body.
    pub body_timeout: Duration,
    /// `HTTP_UPLOAD_TIMEOUT_SECS`: time to receive a whole upload (multipart or `PUT /files/…`).
    pub upload_timeout: Duration,
    /// `HTTP_BODY_IDLE_TIMEOUT_MS`: longest pause between two pieces of any body.
    pub body_idle_timeout: Duration,
    /// `WS_MAX_PENDING_HANDSHAKES`: WebSocket upgrades being set up at once on this node (token,
    /// user row, socket slot); more are refused with 503 and `Retry-After` (0: no cap).
    pub max_pending_handshakes: usize,
}

impl LimitSettings {
    /// Reads the variables above.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let list = |var: &'static str, default: &str| {
            let raw = env
                .get(var)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .unwrap_or(default);
            parse_cidrs(var, raw)
        };
        Ok(LimitSettings {
            trusted_proxies: list("TRUSTED_PROXIES", "none")?,
            exempt: list("RATE_LIMIT_EXEMPT", "127.0.0.0/8,::1")?,
            rest_rate: (
                parse(env, "IP_REST_RATE_PER_SEC", 50)?,
                parse(env, "IP_REST_BURST", 200)?,
            ),
            ws_connect_rate: (
                parse(env, "IP_WS_CONNECT_RATE_PER_SEC", 10)?,
                parse(env, "IP_WS_CONNECT_BURST", 50)?,
            ),
            sessions_per_user: parse(env, "WS_MAX_SESSIONS_PER_USER", 20)?,
            header_timeout: Duration::from_millis(parse(env, "HTTP_HEADER_TIMEOUT_MS", 5_000)?),
            body_timeout: Duration::from_millis(parse(env, "HTTP_BODY_TIMEOUT_MS", 30_000)?),
            upload_timeout: Duration::from_secs(parse(env, "HTTP_UPLOAD_TIMEOUT_SECS", 3_600)?),
            body_idle_timeout: Duration::from_millis(parse(
                env,
                "HTTP_BODY_IDLE_TIMEOUT_MS",
                30_000,
            )?),
            max_pending_handshakes: parse(env, "WS_MAX_PENDING_HANDSHAKES", 512)?,
        })
    }
}
