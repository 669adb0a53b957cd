//! Faults of the database underneath a live node: Postgres restarted mid-traffic. The test owns
//! its Postgres (a throwaway cluster made with `initdb` on a free port), so stopping it
//! disturbs no other test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::ws::WsClient;
use common::{spawn_on_database, TestUser};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::{json, Value};

/// A Postgres cluster of the test's own.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl OwnPostgres {
    fn bin_dir() -> PathBuf {
        let root = PathBuf::from("/usr/lib/postgresql");
        let mut versions: Vec<_> = std::fs::read_dir(&root)
            .expect("PostgreSQL server binaries in /usr/lib/postgresql (see .ci/run)")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("pg_ctl").exists())
            .collect();
        versions.sort();
        versions.pop().expect("a PostgreSQL version with pg_ctl")
    }

    /// A server tool, run as the `postgres` user when we are root (initdb refuses root).
    fn tool(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// Runs a server tool and requires it to succeed.
    fn run(&self, tool: &str, args: &[&str]) {
        let status = self
            .tool(tool)
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        assert!(status.success(), "{tool} {args:?} failed: {status}");
    }

    fn start() -> OwnPostgres {
        let dir = tempfile::Builder::new()
            .prefix("echo-faults-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the test cluster's folder");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let pg = OwnPostgres {
            port,
            bin: Self::bin_dir(),
            dir,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn up(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
    }

    /// Stops it as a crash would (`immediate`: no checkpoint, connections cut).
    fn crash(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .status();
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// One `send` over the socket: `Ok(seq)` on ack, `Err(code)` on an error frame.
async fn send(c: &mut WsClient, chat: &str, n: usize, key: &str) -> Result<i64, String> {
    let id = format!("s{n}-{}", uuid::Uuid::new_v4().simple());
    let reply = c
        .request(
            json!({"type": "send", "chat_id": chat, "content": format!("m{n}"),
                   "client_msg_id": key}),
            &id,
        )
        .await;
    match reply["type"].as_str() {
        Some("ack") => Ok(reply["seq"].as_i64().unwrap()),
        _ => Err(reply["code"].as_str().unwrap_or("?").to_string()),
    }
}

/// Postgres dies mid-traffic and comes back: sends during the outage get a clear error
/// (`unavailable`, promptly), nothing acked is lost, the node recovers by itself, and a retry
/// with the same `client_msg_id` stores each message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_traffic_loses_nothing_acked_and_recovers() {
    let pg = OwnPostgres::start();
    let mut admin = AsyncPgConnection::establish(&pg.url("postgres"))
        .await
        .unwrap();
    admin.batch_execute("CREATE DATABASE echo").await.unwrap();
    drop(admin);
    let app = spawn_on_database(
        &pg.url("echo"),
        &[("DATABASE_TIMEOUT_MS", "1000"), ("WS_RATE_PER_SEC", "100")],
    )
    .await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = app.create_chat(&alice.token, "through the outage").await;
    let chat = chat["id"].as_str().unwrap().to_string();
    app.touch(&bob.token).await;
    app.add_member(&alice.token, &chat, bob.id).await;
    let mut sender = WsClient::connect(&app, &alice.token).await;
    sender.subscribe(&chat).await;
    let mut watcher = WsClient::connect(&app, &bob.token).await;
    watcher.subscribe(&chat).await;

    let keys: Vec<String> = (0..400).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut acked = std::collections::BTreeMap::new(); // seq -> message number
    let mut failed = Vec::new();
    let mut codes = std::collections::BTreeSet::new();
    let mut slowest_error = Duration::ZERO;
    let mut crashed_at = None;
    let mut recovered_after = None;
    let started = Instant::now();
    for (n, key) in keys.iter().enumerate() {
        if n == 30 {
            pg.crash();
            crashed_at = Some(Instant::now());
        }
        if n == 60 {
            pg.up();
        }
        let t = Instant::now();
        match send(&mut sender, &chat, n, key).await {
            Ok(seq) => {
                acked.insert(seq, n);
                if n > 60 && recovered_after.is_none() {
                    recovered_after = crashed_at.map(|c| c.elapsed());
                }
                if n > 60 && acked.len() >= 100 && recovered_after.is_some() {
                    break;
                }
            }
            Err(code) => {
                slowest_error = slowest_error.max(t.elapsed());
                codes.insert(code);
                failed.push(n);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no recovery within 2 minutes"
        );
    }
    assert!(!failed.is_empty(), "the outage was seen by some sends");
    assert_eq!(
        codes.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["unavailable"],
        "sends during the outage get a clear error"
    );
    assert!(
        slowest_error < Duration::from_secs(5),
        "errors come promptly, not after minutes: {slowest_error:?}"
    );
    assert!(
        recovered_after.is_some(),
        "the node went back to acking by itself"
    );
    // The failed ones, retried with their keys, are stored once.
    for &n in &failed {
        let seq = send(&mut sender, &chat, n, &keys[n]).await.expect("retry");
        acked.insert(seq, n);
    }
    // A retry of an acked one is a duplicate, not a second message.
    let (&first_seq, &first_n) = acked.iter().next().unwrap();
    assert_eq!(
        send(&mut sender, &chat, first_n, &keys[first_n]).await,
        Ok(first_seq)
    );

    let mut stored_seqs: Vec<i64> = Vec::new();
    loop {
        let after = stored_seqs.last().copied().unwrap_or(0);
        let page: Vec<Value> = app
            .get(
                &format!("/chats/{chat}/messages?limit=100&after_seq={after}"),
                Some(&alice.token),
            )
            .await
            .json()
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        stored_seqs.extend(page.iter().map(|m| m["seq"].as_i64().unwrap()));
    }
    let acked_seqs: Vec<i64> = acked.keys().copied().collect();
    assert_eq!(
        stored_seqs, acked_seqs,
        "exactly the acked messages are stored"
    );
    assert_eq!(
        stored_seqs,
        (1..=stored_seqs.len() as i64).collect::<Vec<_>>(),
        "no gap in seq"
    );
    // Bob saw every one of them, in order, on the socket that stayed open throughout.
    let mut seen = Vec::new();
    while seen.len() < acked_seqs.len() {
        let m = watcher.next_of("message").await;
        seen.push(m["message"]["seq"].as_i64().unwrap());
    }
    assert_eq!(seen, acked_seqs);
    eprintln!(
        "outage: {} sends refused ({:?} slowest), recovered {:?} after the crash",
        failed.len(),
        slowest_error,
        recovered_after
    );
}
