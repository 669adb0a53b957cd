//! The Node.js side of the tests (tests/node): the AI SDK's stream parsers (tests/ai_sdk.rs)
//! and the AsyncAPI parser (tests/asyncapi.rs). Its packages are pinned in
//! tests/node/package.json and installed with `npm ci` from the lockfile; without Node.js or
//! npm these tests fail (they never skip).

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

/// tests/node.
pub fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

fn json_of(path: PathBuf) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// True when every dependency pinned in package.json is installed at its pinned version (an
/// alias `npm:name@1.2.3` is pinned to `1.2.3`).
fn all_pinned_installed() -> bool {
    let pkg = json_of(node_dir().join("package.json")).expect("tests/node/package.json is JSON");
    let deps = pkg["dependencies"]
        .as_object()
        .expect("tests/node/package.json has dependencies");
    deps.iter().all(|(name, spec)| {
        let spec = spec.as_str().expect("a pinned version");
        let pinned = spec.rsplit('@').next().unwrap_or(spec);
        let installed = json_of(
            node_dir()
                .join("node_modules")
                .join(name)
                .join("package.json"),
        );
        installed.as_ref().and_then(|p| p["version"].as_str()) == Some(pinned)
    })
}

/// Checks Node.js is there and installs tests/node's pinned packages (`npm ci`), once per test
/// process and only when one of them is missing or at another version.
pub fn ensure_node_packages() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let node = std::process::Command::new("node")
            .arg("--version")
            .output()
            .unwrap_or_else(|e| {
                panic!("Node.js is required for tests/node and was not found: {e}")
            });
        assert!(node.status.success(), "`node --version` failed");
        if !all_pinned_installed() {
            let out = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(node_dir())
                .output()
                .unwrap_or_else(|e| panic!("npm is required to install tests/node: {e}"));
            assert!(
                out.status.success(),
                "npm ci in tests/node failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}
