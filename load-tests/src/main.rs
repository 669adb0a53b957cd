//! echo-load: load generator for the Echo chat server (REST and WebSocket).
//!
//! See `load-tests/README.md` for usage. Only loopback targets are accepted and
//! every run is bounded in time.

mod ai;
mod common;
mod drive;
mod http;
mod mock;
mod plan;
mod progress;
mod rest;
mod stats;
mod ws;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::common::{load_secret, output_path, source_ips, Minter, Target};
use crate::rest::RestScenario;
use crate::ws::WsScenario;

#[derive(Parser)]
#[command(
    name = "echo-load",
    version,
    about = "Load generator for the Echo chat server (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// HTTP load on the REST API (scenarios: root, chats, messages)
    Rest(RestArgs),
    /// WebSocket sessions (scenarios: idle, fanout, churn, ai)
    Ws(Box<WsArgs>),
    /// A small OpenAI-compatible streaming server (loopback only) whose tokens carry their emit time
    OpenaiMock(MockArgs),
    /// Create users, rooms and memberships once and write a plan file for `ws --plan`
    Seed(SeedArgs),
    /// Merge the JSON summaries of cooperating processes into one summary + chart
    Merge(MergeArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Server base URL (loopback addresses only)
    #[arg(long, env = "ECHO_LOAD_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// HS256 secret used to mint tokens (or SUPABASE_JWT_SECRET in the environment)
    #[arg(long, env = "SUPABASE_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// File holding the HS256 secret (trailing newline ignored); wins over --secret
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Summary JSON path (the SVG chart goes next to it) [default: load-tests/results/<scenario>-<timestamp>.json]
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar / status lines
    #[arg(long)]
    no_progress: bool,
    /// Tiny sizes for CI: a few sessions/connections for 2-3 seconds (explicit options still win)
    #[arg(long)]
    quick: bool,
    /// Exit with status 3 when the summary lists any problem (errors, failures, seq violations)
    #[arg(long)]
    strict: bool,
}

#[derive(Args)]
struct RestArgs {
    /// Scenario
    #[arg(value_enum)]
    scenario: RestScenario,
    #[command(flatten)]
    common: Common,
    /// Concurrent keep-alive connections (one worker task each) [default: 64, quick 4]
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds to run [default: 10, quick 2]
    #[arg(long)]
    duration: Option<u64>,
    /// Chats the load user creates first (chats: rows to list; messages: spread round-robin) [default: 100, quick 4]
    #[arg(long)]
    chats: Option<usize>,
}

#[derive(Args)]
struct WsArgs {
    /// Scenario
    #[arg(value_enum)]
    scenario: WsScenario,
    #[command(flatten)]
    common: Common,
    /// Use a plan written by `echo-load seed` instead of seeding now (required with --process-count > 1)
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Sessions (one user each) when seeding in-process [default: idle 2000, fanout 1000, quick 8]
    #[arg(long)]
    sessions: Option<usize>,
    /// Members per room when seeding in-process [default: idle 20, fanout 50, churn 10, quick 4]
    #[arg(long)]
    room_size: Option<usize>,
    /// Senders per room (fanout): the first N members of each room [default: 1]
    #[arg(long)]
    senders: Option<usize>,
    /// Total messages per second over all senders of the plan (fanout) [default: 200, quick 10]
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of measurement (hold time for idle) [default: 10 (idle 30), quick 3]
    #[arg(long)]
    duration: Option<u64>,
    /// Seconds to keep receiving after senders stop (fanout) [default: 2, quick 1]
    #[arg(long)]
    drain: Option<u64>,
    /// Churn workers (each loops connect → subscribe → close) [default: 32, quick 2]
    #[arg(long)]
    concurrency: Option<usize>,
    /// Spread connections over 127.0.0.1..=127.0.0.N [default: 4]
    #[arg(long)]
    source_ips: Option<u8>,
    /// This process's index; it owns sessions with index ≡ I (mod K)
    #[arg(long, default_value_t = 0)]
    process_index: u32,
    /// Number of cooperating processes (K)
    #[arg(long, default_value_t = 1)]
    process_count: u32,
    /// Concurrent REST requests while seeding [default: 32]
    #[arg(long)]
    seed_concurrency: Option<usize>,
    /// Concurrent WebSocket handshakes during ramp-up [default: 128]
    #[arg(long)]
    connect_concurrency: Option<usize>,
    /// Max seconds for all sessions to connect and subscribe [default: 120, quick 20]
    #[arg(long)]
    setup_timeout: Option<u64>,
    /// Unix time (seconds) at which the measurement starts, to line up several processes
    #[arg(long)]
    start_at: Option<u64>,
    /// ai: chats, each with one prompter, so this many replies stream at once [default: 100, quick 2]
    #[arg(long)]
    replies: Option<usize>,
    /// ai: sessions (distinct users) watching each chat, the prompter included [default: 5, quick 3]
    #[arg(long)]
    watchers: Option<usize>,
    /// ai: tokens every reply must have (checked per watcher; unset: only usage is checked)
    #[arg(long)]
    tokens: Option<usize>,
    /// ai: the provider's tokens/s per reply (prompt timeout and default ramp) [default: 50]
    #[arg(long)]
    token_rate: Option<f64>,
    /// ai: seconds over which the first prompts are spread [default: tokens / token-rate, quick 0]
    #[arg(long)]
    ramp: Option<f64>,
    /// ai: calls made directly to the mock during the window, for a TTFT baseline (needs --mock-url) [default: 0]
    #[arg(long)]
    direct_ttft_samples: Option<usize>,
    /// ai: the mock's URL (`http://127.0.0.1:PORT[/v1]`, loopback only) for --direct-ttft-samples
    #[arg(long)]
    mock_url: Option<String>,
}

#[derive(Args)]
struct MockArgs {
    /// Port to listen on
    #[arg(long, default_value_t = 18700)]
    port: u16,
    /// Address to bind (loopback only)
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Content chunks (tokens) per reply
    #[arg(long, default_value_t = 200)]
    tokens: usize,
    /// Tokens per second per reply (0: as fast as possible)
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Delay from the request to the first token, in milliseconds
    #[arg(long, default_value_t = 0)]
    first_token_ms: u64,
    /// Seconds after which the server exits
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Also write the exit summary (JSON) here
    #[arg(long)]
    out: Option<PathBuf>,
    /// No status line every 5 s
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args)]
struct SeedArgs {
    #[command(flatten)]
    common: Common,
    /// Users (= sessions) to create [default: 1000, quick 8]
    #[arg(long)]
    sessions: Option<usize>,
    /// Members per room [default: 50, quick 4]
    #[arg(long)]
    room_size: Option<usize>,
    /// Concurrent REST requests [default: 32]
    #[arg(long)]
    seed_concurrency: Option<usize>,
}

#[derive(Args)]
struct MergeArgs {
    /// Summary JSON files written by the processes of one run
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Merged summary path (chart next to it)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit with status 3 when the merged summary lists any problem
    #[arg(long)]
    strict: bool,
}

/// Every run stops by itself; this caps how long a measurement may be asked to last.
const MAX_DURATION: u64 = 3600;

fn pick<T>(v: Option<T>, quick: bool, q: T, full: T) -> T {
    v.unwrap_or(if quick { q } else { full })
}

fn secret_of(c: &Common) -> Result<Vec<u8>> {
    load_secret(c.secret.as_deref(), c.secret_file.as_deref())
}

/// Exit status: 0 ok, 1 error before/while running (bad options, seeding failed),
/// 2 the run achieved nothing (e.g. no request succeeded), 3 `--strict` and the
/// summary lists problems.
#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let strict = match &cli.cmd {
        Cmd::Rest(a) => a.common.strict,
        Cmd::Ws(a) => a.common.strict,
        Cmd::Seed(_) | Cmd::OpenaiMock(_) => false,
        Cmd::Merge(a) => a.strict,
    };
    match real_main(cli).await {
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        Ok(Some(s)) if s.nothing_worked => {
            eprintln!("FAILED: {}", s.problems.join("; "));
            std::process::exit(2);
        }
        Ok(Some(s)) if strict && !s.problems.is_empty() => {
            eprintln!("problems (--strict): {}", s.problems.join("; "));
            std::process::exit(3);
        }
        Ok(Some(s)) if !s.problems.is_empty() => {
            eprintln!("problems: {}", s.problems.join("; "));
        }
        Ok(_) => {}
    }
}

/// Runs the subcommand; the summary of a measured run.
async fn real_main(cli: Cli) -> Result<Option<stats::Summary>> {
    match cli.cmd {
        Cmd::Rest(a) => rest::run(rest_config(a)?).await.map(Some),
        Cmd::Ws(a) => drive::run(ws_config(*a)?).await.map(Some),
        Cmd::OpenaiMock(a) => {
            if a.duration == 0 || a.duration > MAX_DURATION {
                bail!("--duration must be between 1 and {MAX_DURATION} seconds");
            }
            mock::run(mock::MockConfig {
                host: a.host,
                port: a.port,
                tokens: a.tokens,
                rate: a.rate,
                first_token: Duration::from_millis(a.first_token_ms),
                duration: Duration::from_secs(a.duration),
                progress: !a.no_progress,
                out: a.out,
            })
            .await?;
            Ok(None)
        }
        Cmd::Seed(a) => {
            seed_plan(a).await?;
            Ok(None)
        }
        Cmd::Merge(a) => stats::merge(&a.files, a.out.as_deref()).map(Some),
    }
}

/// `rest`: the options with their defaults applied and checked.
fn rest_config(a: RestArgs) -> Result<rest::RestConfig> {
    let q = a.common.quick;
    let target = Target::parse(&a.common.url)?;
    let connections = pick(a.connections, q, 4, 64);
    let duration = pick(a.duration, q, 2, 10);
    let chats = pick(a.chats, q, 4, 100);
    if connections == 0 || duration == 0 {
        bail!("--connections and --duration must be at least 1");
    }
    if duration > MAX_DURATION {
        bail!("--duration is capped at {MAX_DURATION} seconds");
    }
    let secret = if a.scenario == RestScenario::Root {
        secret_of(&a.common).ok()
    } else {
        Some(secret_of(&a.common)?)
    };
    let name = format!(
        "rest-{}",
        serde_json::to_value(a.scenario)?.as_str().unwrap_or("rest")
    );
    let params = json!({
        "scenario": a.scenario,
        "connections": connections,
        "duration_secs": duration,
        "chats": chats,
        "quick": q,
    });
    Ok(rest::RestConfig {
        scenario: a.scenario,
        target,
        connections,
        duration: Duration::from_secs(duration),
        chats,
        secret,
        progress: !a.common.no_progress,
        out: output_path(a.common.out.as_deref(), &name, 0, 1),
        params,
    })
}

/// `ws`: the options with their defaults (per scenario, and `--quick`) applied and checked.
fn ws_config(a: WsArgs) -> Result<ws::WsConfig> {
    let q = a.common.quick;
    let target = Target::parse(&a.common.url)?;
    let secret = secret_of(&a.common)?;
    let (def_sessions, def_room, def_duration) = match a.scenario {
        WsScenario::Idle => (2000, 20, 30),
        WsScenario::Fanout => (1000, 50, 10),
        WsScenario::Churn => (32, 10, 10),
        WsScenario::Ai => (500, 5, 10),
    };
    let (ai, ramp) = ai_opts(&a)?;
    let (sessions, room_size) = if a.scenario == WsScenario::Ai {
        (ai.replies * ai.watchers, ai.watchers)
    } else {
        (
            pick(a.sessions, q, 8, def_sessions),
            pick(a.room_size, q, 4, def_room),
        )
    };
    let senders = a.senders.unwrap_or(1);
    let rate = pick(a.rate, q, 10.0, 200.0);
    let duration = pick(a.duration, q, 3, def_duration);
    let drain = pick(a.drain, q, 1, 2);
    let concurrency = pick(a.concurrency, q, 2, 32);
    let n_ips = a.source_ips.unwrap_or(4);
    if duration == 0 || sessions == 0 || room_size == 0 || concurrency == 0 {
        bail!("--duration, --sessions, --room-size and --concurrency must be at least 1");
    }
    if duration > MAX_DURATION || drain > 60 {
        bail!("--duration is capped at {MAX_DURATION} seconds and --drain at 60");
    }
    if !(rate.is_finite() && rate >= 0.0) {
        bail!("--rate must be a non-negative number");
    }
    let ips = source_ips(&target, n_ips)?;
    let name = format!(
        "ws-{}",
        serde_json::to_value(a.scenario)?.as_str().unwrap_or("ws")
    );
    let mut cfg = ws::WsConfig {
        scenario: a.scenario,
        target,
        secret,
        plan: a.plan,
        sessions,
        room_size,
        senders,
        rate,
        duration: Duration::from_secs(duration),
        drain: Duration::from_secs(drain),
        concurrency,
        source_ips: ips,
        process_index: a.process_index,
        process_count: a.process_count,
        seed_concurrency: a.seed_concurrency.unwrap_or(32),
        connect_concurrency: a.connect_concurrency.unwrap_or(128),
        setup_timeout: Duration::from_secs(pick(a.setup_timeout, q, 20, 120)),
        start_at: a.start_at,
        progress: !a.common.no_progress,
        out: output_path(
            a.common.out.as_deref(),
            &name,
            a.process_index,
            a.process_count,
        ),
        params: serde_json::Value::Null,
        ai,
    };
    cfg.params = ws_params(&cfg, q, ramp);
    Ok(cfg)
}

/// The `ai` options of `ws` with their defaults applied and checked, and `--ramp` in seconds.
fn ai_opts(a: &WsArgs) -> Result<(ws::AiOpts, f64)> {
    let q = a.common.quick;
    let replies = pick(a.replies, q, 2, 100);
    let watchers = pick(a.watchers, q, 3, 5);
    if a.scenario == WsScenario::Ai && (replies == 0 || watchers == 0) {
        bail!("--replies and --watchers must be at least 1");
    }
    let token_rate = a.token_rate.unwrap_or(50.0);
    if !(token_rate.is_finite() && token_rate > 0.0) {
        bail!("--token-rate must be a positive number");
    }
    let reply_secs = a.tokens.unwrap_or(200) as f64 / token_rate;
    let ramp = pick(a.ramp, q, 0.0, reply_secs);
    if !(ramp.is_finite() && ramp >= 0.0) {
        bail!("--ramp must be a non-negative number of seconds");
    }
    let mock = a.mock_url.as_deref().map(Target::parse).transpose()?;
    let opts = ws::AiOpts {
        replies,
        watchers,
        tokens: a.tokens,
        token_rate,
        ramp: Duration::from_secs_f64(ramp),
        direct_samples: a.direct_ttft_samples.unwrap_or(0),
        mock,
    };
    Ok((opts, ramp))
}

/// The effective options of a `ws` run, for its summary (`ai` has its own, without the
/// fanout and churn ones).
fn ws_params(cfg: &ws::WsConfig, quick: bool, ramp_secs: f64) -> serde_json::Value {
    let mut params = json!({
        "scenario": cfg.scenario,
        "plan": cfg.plan.as_ref().map(|p| p.display().to_string()),
        "sessions": cfg.sessions,
        "room_size": cfg.room_size,
        "senders_per_room": cfg.senders,
        "rate_total": cfg.rate,
        "duration_secs": cfg.duration.as_secs(),
        "drain_secs": cfg.drain.as_secs(),
        "concurrency": cfg.concurrency,
        "source_ips": cfg.source_ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "process_index": cfg.process_index,
        "process_count": cfg.process_count,
        "connect_concurrency": cfg.connect_concurrency,
        "seed_concurrency": cfg.seed_concurrency,
        "start_at": cfg.start_at,
        "quick": quick,
    });
    if cfg.scenario == WsScenario::Ai {
        let ai = &cfg.ai;
        params["replies"] = json!(ai.replies);
        params["watchers"] = json!(ai.watchers);
        params["tokens"] = json!(ai.tokens);
        params["token_rate"] = json!(ai.token_rate);
        params["ramp_secs"] = json!(ramp_secs);
        params["direct_ttft_samples"] = json!(ai.direct_samples);
        params["mock_url"] = json!(ai.mock.as_ref().map(|m| m.base.clone()));
        for k in [
            "senders_per_room",
            "rate_total",
            "drain_secs",
            "concurrency",
        ] {
            if let Some(o) = params.as_object_mut() {
                o.remove(k);
            }
        }
    }
    params
}

/// `seed`: creates the users, rooms and memberships and writes the plan; prints where, and
/// what it holds.
async fn seed_plan(a: SeedArgs) -> Result<()> {
    let q = a.common.quick;
    let target = Target::parse(&a.common.url)?;
    let secret = secret_of(&a.common)?;
    let sessions = pick(a.sessions, q, 8, 1000);
    let room_size = pick(a.room_size, q, 4, 50);
    let conc = a.seed_concurrency.unwrap_or(32);
    common::raise_nofile();
    let minter = Minter::new(&secret, 3600);
    let mut progress = progress::Progress::new(!a.common.no_progress);
    let t0 = std::time::Instant::now();
    let plan = plan::seed(&target, &minter, sessions, room_size, conc, &mut progress).await?;
    progress.finish();
    let out = a.common.out.clone().unwrap_or_else(|| {
        common::default_results_dir().join(format!("plan-{}.json", common::timestamp_slug()))
    });
    plan.save(&out)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "plan": out.display().to_string(),
            "users": plan.users.len(),
            "rooms": plan.rooms.len(),
            "room_size": room_size,
            "seconds": (t0.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        }))?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_examples() {
        for args in [
            vec!["echo-load", "rest", "root", "--quick"],
            vec![
                "echo-load",
                "rest",
                "messages",
                "--secret",
                "s",
                "--chats",
                "10",
            ],
            vec![
                "echo-load",
                "ws",
                "fanout",
                "--secret",
                "s",
                "--rate",
                "50",
                "--senders",
                "2",
            ],
            vec![
                "echo-load",
                "ws",
                "idle",
                "--plan",
                "p.json",
                "--process-index",
                "1",
                "--process-count",
                "3",
                "--start-at",
                "1700000000",
            ],
            vec!["echo-load", "seed", "--sessions", "10", "--out", "p.json"],
            vec![
                "echo-load",
                "ws",
                "ai",
                "--replies",
                "10",
                "--watchers",
                "5",
                "--tokens",
                "200",
                "--direct-ttft-samples",
                "20",
                "--mock-url",
                "http://127.0.0.1:18700/v1",
            ],
            vec![
                "echo-load",
                "openai-mock",
                "--port",
                "18700",
                "--tokens",
                "200",
                "--rate",
                "50",
                "--first-token-ms",
                "5",
            ],
            vec!["echo-load", "merge", "a.json", "b.json"],
        ] {
            Cli::try_parse_from(args.clone()).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
