//! `echo-load ws`: the driver every WebSocket scenario shares. It loads or seeds the plan,
//! builds the sessions' shared context, runs the scenario (`idle`, `fanout` and `churn` from
//! [`crate::ws`], `ai` from [`crate::ai`]) and writes the summary. It sits above both, so
//! that `ai` can use the session plumbing of `ws` without `ws` knowing `ai`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::ai;
use crate::common::Minter;
use crate::plan::{seed, Plan};
use crate::progress::Progress;
use crate::stats::Summary;
use crate::ws::{per_sender_rate, run_churn, run_sessions, Ctx, WsConfig, WsScenario};

/// Runs a WebSocket scenario and writes its summary.
pub async fn run(cfg: WsConfig) -> Result<Summary> {
    let nofile = crate::common::raise_nofile();
    if cfg.process_count == 0 || cfg.process_index >= cfg.process_count {
        bail!(
            "--process-index {} must be below --process-count {}",
            cfg.process_index,
            cfg.process_count
        );
    }
    let mut progress = Progress::new(cfg.progress);
    let minter = Minter::new(&cfg.secret, cfg.duration.as_secs() + 3 * 3600);
    let mut notes = Vec::new();
    let plan = load_plan(&cfg, &minter, &mut notes, &mut progress).await?;
    if plan.users.is_empty() {
        bail!("the plan has no users");
    }
    let ctx = Arc::new(Ctx::new(&cfg, minter, plan.rooms.len()));

    let mut summary = Summary::new(
        "ws",
        cfg.scenario.name(),
        &cfg.target.base,
        cfg.params.clone(),
    );
    summary.process_index = cfg.process_index;
    summary.process_count = cfg.process_count;
    summary.notes = notes;

    let (p, s) = (&mut progress, &mut summary);
    match cfg.scenario {
        WsScenario::Idle | WsScenario::Fanout => {
            run_sessions(&cfg, &plan, ctx.clone(), nofile, p, s).await?
        }
        WsScenario::Ai => ai::run(&cfg, &plan, ctx.clone(), nofile, p, s).await?,
        WsScenario::Churn => run_churn(&cfg, &plan, ctx.clone(), nofile, p, s).await?,
    }
    progress.finish();
    record_setup_and_frames(&cfg, &plan, &ctx, &mut summary);
    summary.finish_and_write(&cfg.out)
}

/// The plan of `--plan` (a note in `notes` when it was seeded against another URL), or one
/// seeded now for a single process.
async fn load_plan(
    cfg: &WsConfig,
    minter: &Minter,
    notes: &mut Vec<String>,
    progress: &mut Progress,
) -> Result<Plan> {
    if let Some(p) = &cfg.plan {
        let plan = Plan::load(p)?;
        if plan.url != cfg.target.base {
            notes.push(format!(
                "plan was seeded against {} but the run targets {}",
                plan.url, cfg.target.base
            ));
        }
        return Ok(plan);
    }
    if cfg.process_count > 1 {
        bail!(
            "multi-process runs share one plan: run `echo-load seed ... --out plan.json` once, then pass --plan plan.json to every process"
        );
    }
    let n = match cfg.scenario {
        WsScenario::Churn => cfg.concurrency,
        _ => cfg.sessions,
    };
    seed(
        &cfg.target,
        minter,
        n,
        cfg.room_size,
        cfg.seed_concurrency,
        progress,
    )
    .await
}

/// The part of the summary every scenario shares: setup failures by stage, unclean closes,
/// error frames, close codes, the error samples and the server's `welcome`.
fn record_setup_and_frames(cfg: &WsConfig, plan: &Plan, ctx: &Ctx, summary: &mut Summary) {
    let c = &ctx.c;
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    summary.counter("setup_failed_tcp", ld(&c.fail_tcp));
    summary.counter("setup_failed_upgrade", ld(&c.fail_upgrade));
    summary.counter("setup_failed_welcome", ld(&c.fail_welcome));
    summary.counter("setup_failed_subscribe", ld(&c.fail_subscribe));
    summary.counter("setup_failed_timeout", ld(&c.fail_timeout));
    summary.counter("setup_failed", c.failed_setup());
    summary.counter("close_unclean", ld(&c.close_unclean));
    summary.counter("error_frames", ld(&c.error_frames));
    summary.counter("rate_limited", ld(&c.rate_limited));
    if let Ok(m) = c.close_codes.lock() {
        for (code, n) in m.iter() {
            summary.counter(&format!("close_code_{code}"), *n);
        }
    }
    summary.errors_sample = ctx.errors.snapshot();
    if let Some(w) = ctx.welcome.lock().ok().and_then(|w| w.clone()) {
        if let Some(rate) = w
            .pointer("/limits/rate_per_sec")
            .and_then(|r| r.as_f64())
            .filter(|r| *r > 0.0)
        {
            if let Some(per) = per_sender_rate(cfg, plan) {
                if per > rate {
                    summary.notes.push(format!(
                        "per-sender rate {per:.1}/s exceeds the server's announced rate_per_sec {rate}"
                    ));
                }
            }
        }
        summary.checks.insert("server_welcome".into(), w);
    }
    summary.problem_if_nonzero("setup_failed", "session setups failed");
    summary.problem_if_nonzero("error_frames", "error frames received");
    summary.problem_if_nonzero("rate_limited", "rate_limited errors");
}
