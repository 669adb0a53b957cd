//! Test harness: `spawn_app(backend)` starts the real server on port 0, on its own database
//! (a fresh SQLite file, or a fresh Postgres database cloned from a migrated template), and
//! returns a handle with request helpers.
#![allow(dead_code)]

pub mod ai;
pub mod frame_schema;
pub mod node;
pub mod openai_mock;
pub mod redis_cluster;
pub mod ws;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use echo::config::Settings;
use echo::startup::{shutdown, Application};
use echo::state::AppState;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use uuid::Uuid;

/// The shared HS256 secret every test app is configured with.
pub const SECRET: &str = "test-secret-with-at-least-32-characters!!";

/// Which database backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh Postgres database.
    Postgres,
}

/// Defines `mod sqlite { #[tokio::test] fn name() }` and `mod postgres { … }` for each listed
/// `async fn name(backend: Backend)`, so every scenario runs on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Base URL of the Postgres server for tests (no database name).
pub fn postgres_base_url() -> String {
    std::env::var("ECHO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

static TEMPLATE: OnceLock<Mutex<Option<String>>> = OnceLock::new();

/// Name of the migrated template database, created once per test process.
async fn postgres_template() -> String {
    let cell = TEMPLATE.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().await;
    if let Some(name) = guard.as_ref() {
        return name.clone();
    }
    let base = postgres_base_url();
    let mut admin = AsyncPgConnection::establish(&format!("{base}/postgres"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Postgres at {base} is required for the Postgres suite and could not be reached: {e}. \
                 Start it (see .ci/run) or set ECHO_TEST_POSTGRES_URL."
            )
        });
    // One template per migration set; several test binaries may race to create it.
    let name = format!("echo_tpl_{}", migrations_fingerprint());
    admin
        .batch_execute("SELECT pg_advisory_lock(4242)")
        .await
        .expect("advisory lock");
    let exists = admin
        .batch_execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{name}') \
             THEN RAISE EXCEPTION 'missing'; END IF; END $$"
        ))
        .await
        .is_ok();
    if !exists {
        let building = format!("{name}_building");
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building}"))
            .await;
        admin
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .expect("create template");
        let settings = settings_for(&format!("{base}/{building}"), &HashMap::new());
        echo::db::migrate::run_migrations(&settings)
            .await
            .expect("migrate template");
        admin
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .await
            .expect("rename template");
    }
    admin
        .batch_execute("SELECT pg_advisory_unlock(4242)")
        .await
        .expect("advisory unlock");
    *guard = Some(name.clone());
    name
}

fn migrations_fingerprint() -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    let mut entries: Vec<_> = walk(std::path::Path::new(dir));
    entries.sort();
    for p in entries {
        p.hash(&mut h);
        std::fs::read(&p).unwrap_or_default().hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A fresh Postgres database cloned from the migrated template.
pub async fn fresh_postgres_database() -> String {
    let template = postgres_template().await;
    let base = postgres_base_url();
    let name = format!("echo_t_{}", Uuid::new_v4().simple());
    let mut admin = AsyncPgConnection::establish(&format!("{base}/postgres"))
        .await
        .expect("connect to Postgres");
    let mut last = String::new();
    for _ in 0..20 {
        match admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
        {
            Ok(()) => return format!("{base}/{name}"),
            // Another test may be cloning the template at this instant.
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("could not create a test database: {last}");
}

fn settings_for(database_url: &str, extra: &HashMap<String, String>) -> Settings {
    let data_dir = std::env::temp_dir().join(format!("echo-test-{}", Uuid::new_v4().simple()));
    let mut env: HashMap<String, String> = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("SUPABASE_JWT_SECRET", SECRET),
        ("HTTP_WORKERS", "2"),
        ("DATABASE_POOL_SIZE", "8"),
        ("ECHO_NODE_ID", "test-node"),
        ("MAX_JSON_BYTES", "65536"),
        // Media work runs in `echo-server media-worker` child processes; a test binary cannot
        // be its own worker, so the apps spawn the server binary Cargo built for the tests.
        ("VIDEO_WORKER_BIN", env!("CARGO_BIN_EXE_echo-server")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.insert(
        "ECHO_DATA_DIR".into(),
        data_dir.to_string_lossy().into_owned(),
    );
    env.insert("DATABASE_URL".into(), database_url.to_string());
    for (k, v) in extra {
        env.insert(k.clone(), v.clone());
    }
    Settings::from_map(&env).expect("test settings")
}

/// A running test server.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The bound port.
    pub port: u16,
    /// The database URL it runs on.
    pub database_url: String,
    /// Its shared state (for assertions that need the database).
    pub state: AppState,
    /// HTTP client.
    pub client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    stopped: Option<std::sync::mpsc::Receiver<()>>,
    system: actix_rt::System,
}

/// Starts an app on `backend` with default test settings.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Starts an app on `backend` with extra environment settings.
pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let database_url = match backend {
        Backend::Sqlite => std::env::temp_dir()
            .join(format!("echo-test-{}.db", Uuid::new_v4().simple()))
            .to_string_lossy()
            .into_owned(),
        Backend::Postgres => fresh_postgres_database().await,
    };
    spawn_on_database(&database_url, extra).await
}

/// Starts an app on an existing database (to restart a node on the same data).
pub async fn spawn_on_database(database_url: &str, extra: &[(&str, &str)]) -> TestApp {
    let extra: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = settings_for(database_url, &extra);
    if std::env::var("TEST_LOG").is_ok() {
        echo::telemetry::init(echo::config::LogFormat::Pretty);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            match Application::build(settings).await {
                Ok(app) => {
                    let info = (
                        app.port(),
                        app.state().clone(),
                        app.handle(),
                        actix_rt::System::current(),
                    );
                    let _ = tx.send(Ok(info));
                    let _ = app.run_until_stopped().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:#}")));
                }
            }
        });
        let _ = stopped_tx.send(());
    });
    let (port, state, handle, system) = rx
        .await
        .expect("server thread died")
        .unwrap_or_else(|e| panic!("app failed to start: {e}"));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        database_url: database_url.to_string(),
        state,
        // Idle connections are dropped well before the server's 5 s keep-alive ends them, so a
        // request never races the server closing the connection it reuses.
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("client"),
        handle,
        stopped: Some(stopped_rx),
        system,
    }
}

impl TestApp {
    /// Stops the server gracefully (sessions get 1001) and waits for it to finish.
    pub async fn stop(mut self) {
        shutdown(&self.state, &self.handle).await;
        if let Some(rx) = self.stopped.take() {
            let _ =
                tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(15))).await;
        }
    }

    /// Stops the node abruptly, as a crash would: no close frames, connections just drop.
    pub async fn kill(mut self) {
        // Workers die with the system; the non-graceful stop ends the main runtime too, and
        // with it every task of the node (heartbeats, broker), as a process exit would.
        self.system.stop();
        drop(self.handle.stop(false));
        if let Some(rx) = self.stopped.take() {
            let _ =
                tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(15))).await;
        }
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// GET with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut rb = self.client.get(self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send().await.expect("request")
    }

    /// Sends `method path` with a JSON body and a bearer token.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut rb = self.client.request(method, self.url(path)).json(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send().await.expect("request")
    }

    /// DELETE with a bearer token.
    pub async fn delete(&self, path: &str, token: &str) -> reqwest::Response {
        let rb = self.client.delete(self.url(path)).bearer_auth(token);
        rb.send().await.expect("request")
    }

    /// POST JSON.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.send_json(reqwest::Method::POST, path, Some(token), body)
            .await
    }

    /// Creates a chat as `token`'s user; returns its JSON.
    pub async fn create_chat(&self, token: &str, title: &str) -> Value {
        let res = self.post("/chats/", token, &json!({"title": title})).await;
        assert_eq!(res.status(), 201, "create chat");
        res.json().await.expect("json")
    }

    /// Makes sure the user behind `token` exists (first authenticated request upserts it).
    pub async fn touch(&self, token: &str) {
        let res = self.get("/users/me", Some(token)).await;
        assert_eq!(res.status(), 200, "GET /users/me");
    }

    /// Adds `member` to `chat_id` as the owner `owner_token`.
    pub async fn add_member(&self, owner_token: &str, chat_id: &str, member: Uuid) {
        let res = self
            .post(
                &format!("/chats/{chat_id}/members"),
                owner_token,
                &json!({"user_id": member}),
            )
            .await;
        assert_eq!(res.status(), 201, "add member");
    }

    /// Posts a message; returns its JSON.
    pub async fn post_message(&self, token: &str, chat_id: &str, content: &str) -> Value {
        let res = self
            .post(
                "/messages/",
                token,
                &json!({"content": content, "chat_id": chat_id}),
            )
            .await;
        assert_eq!(res.status(), 201, "post message");
        res.json().await.expect("json")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.stopped.is_some() {
            drop(self.handle.stop(false));
        }
    }
}

/// A test user: id and a valid HS256 token.
pub struct TestUser {
    /// The user's id.
    pub id: Uuid,
    /// Bearer token.
    pub token: String,
}

impl TestUser {
    /// A new random user with a token valid for an hour.
    pub fn new() -> TestUser {
        let id = Uuid::new_v4();
        TestUser {
            id,
            token: hs_token(&id.to_string(), 3600, "authenticated"),
        }
    }
}

/// HS256 token with the test secret.
pub fn hs_token(sub: &str, ttl: i64, aud: &str) -> String {
    let claims = json!({
        "sub": sub,
        "aud": aud,
        "exp": chrono::Utc::now().timestamp() + ttl,
        "email": format!("{}@example.test", &sub.chars().take(8).collect::<String>()),
        "role": "authenticated",
    });
    sign(
        Algorithm::HS256,
        None,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

/// Signs arbitrary claims.
pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

/// Path of a test fixture.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Asserts a FastAPI plain error: `status` and exactly `{"detail": detail}`.
pub async fn assert_detail(res: reqwest::Response, status: u16, detail: &str, case: &str) {
    assert_eq!(res.status(), status, "{case}: status");
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(body, json!({"detail": detail}), "{case}: body");
}

/// Asserts a FastAPI 422 whose `detail` list holds an issue at `loc` of type `kind`, every
/// issue having `loc`, `msg` and `type`; returns the body.
pub async fn assert_validation(
    res: reqwest::Response,
    loc: Value,
    kind: &str,
    case: &str,
) -> Value {
    assert_eq!(res.status(), 422, "{case}: status");
    let body: Value = res.json().await.expect("422 body is JSON");
    let issues = body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: detail is not a list: {body}"));
    assert!(!issues.is_empty(), "{case}: empty detail list");
    for issue in issues {
        assert!(
            issue["loc"].is_array(),
            "{case}: issue without loc: {issue}"
        );
        assert!(
            issue["msg"].is_string(),
            "{case}: issue without msg: {issue}"
        );
        assert!(
            issue["type"].is_string(),
            "{case}: issue without type: {issue}"
        );
    }
    assert!(
        issues.iter().any(|i| i["loc"] == loc && i["type"] == kind),
        "{case}: no issue at {loc} of type {kind:?} in {body}"
    );
    body
}

/// Asserts an RFC 3339 UTC timestamp written with `Z`.
pub fn assert_utc_timestamp(value: &Value, what: &str) {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    assert!(s.ends_with('Z'), "{what} is not in UTC 'Z' form: {s}");
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what} is not RFC 3339 ({e}): {s}"));
}

/// The keys of a JSON object, sorted.
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// A Redis server of a test's own, on a free port, so that it can be stopped and restarted
/// without touching the shared one.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut server = RedisServer { port, child: None };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (no persistence: it comes back empty, like a failover).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is required for the cluster tests (see .ci/run)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// URL of the shared Redis the cluster tests use (a unique channel prefix per test keeps them
/// apart).
pub fn shared_redis_url() -> String {
    std::env::var("ECHO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}
