//! `echo-server`: `serve` (default), `migrate`, `token` for development mode, and the hidden
//! `media-worker` the server runs for each piece of FFmpeg work (see `echo::video::sandbox`).

use clap::{Parser, Subcommand};
use echo::config::Settings;
use echo::startup::{shutdown, Application};
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "echo-server", version, about = "Echo realtime server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print a token signed with the generated development secret (development mode only).
    Token {
        /// The user's id (a new one when omitted).
        #[arg(long)]
        user: Option<Uuid>,
        /// Email claim.
        #[arg(long)]
        email: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: i64,
    },
    /// Run one piece of media work (a request on stdin, JSON lines on stdout), sandboxed. The
    /// server starts these itself; nothing else should.
    #[command(name = "media-worker", hide = true)]
    MediaWorker,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::MediaWorker)) {
        // No configuration, no runtime, no log set-up: the worker reads only its request.
        return echo::video::sandbox::worker::main();
    }
    actix_web::rt::System::new().block_on(run_command(cli))
}

async fn run_command(cli: Cli) -> std::process::ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    echo::telemetry::init(settings.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => echo::db::migrate::run_migrations(&settings)
            .await
            .map(|applied| println!("applied {} migration(s): {applied:?}", applied.len())),
        Command::Token {
            user,
            email,
            ttl_secs,
        } => token(&settings, user, email, ttl_secs),
        Command::MediaWorker => Ok(()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let state = app.state().clone();
    let handle = app.handle();
    actix_rt::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: closing sessions, finishing requests");
        shutdown(&state, &handle).await;
    });
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "SIGTERM handler unavailable; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn token(
    settings: &Settings,
    user: Option<Uuid>,
    email: Option<String>,
    ttl_secs: i64,
) -> anyhow::Result<()> {
    if !settings.dev_mode() {
        anyhow::bail!(
            "authentication is configured (SUPABASE_JWT_SECRET, JWT_JWKS_URL, JWT_JWKS_FILE or \
             JWT_ISSUER): tokens come from your identity provider, not from echo-server"
        );
    }
    let secret = echo::auth::dev_secret::load_or_create(&settings.data_dir)?;
    let user = user.unwrap_or_else(Uuid::new_v4);
    let email =
        email.unwrap_or_else(|| format!("dev-{}@example.test", &user.simple().to_string()[..8]));
    let token = echo::auth::mint_hs256(
        &secret,
        user,
        Some(&email),
        ttl_secs,
        &settings.jwt_audience,
    )?;
    println!("{token}");
    eprintln!("user {user} ({email}); valid for {ttl_secs} s");
    Ok(())
}
