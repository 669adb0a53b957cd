//! A real Redis Cluster for the tests: three masters with a replica each, on free loopback
//! ports, made with `redis-server --cluster-enabled yes` and `redis-cli --cluster create`.
//!
//! Its servers are started from one long-lived thread with a parent-death signal, so they end
//! with the test process even when a cluster shared by a whole test binary is never dropped.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Six servers: `ports[i]` is a master for i < 3 when the cluster is made (`--cluster create`
/// takes the first three as masters); which one is master later is for [`RedisCluster::owner`].
pub struct RedisCluster {
    /// Client ports of the six servers.
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

/// The cluster shared by the tests of one binary (each test isolates itself with a channel
/// prefix of its own).
pub fn shared_redis_cluster() -> &'static RedisCluster {
    static SHARED: OnceLock<RedisCluster> = OnceLock::new();
    SHARED.get_or_init(RedisCluster::start)
}

impl RedisCluster {
    /// Starts six servers and joins them into a cluster; returns once every slot is served.
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let free = free_ports(12);
        let (ports, buses) = free.split_at(6);
        let children = ports
            .iter()
            .zip(buses)
            .map(|(port, bus)| Some(spawn_kept(server(dir.path(), *port, *bus))))
            .collect();
        let cluster = RedisCluster {
            ports: ports.to_vec(),
            children,
            _dir: dir,
        };
        for port in &cluster.ports {
            wait_for(&format!("redis-server on {port}"), || {
                std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok()
            });
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let made = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli is required for the Redis Cluster tests (see .ci/run)");
        assert!(made.success(), "redis-cli --cluster create failed");
        for port in &cluster.ports {
            wait_for("the cluster to be ok on every node", || {
                cli(*port, &["cluster", "info"]).contains("cluster_state:ok")
            });
        }
        cluster
    }

    /// `REDIS_URL` for Echo: every server as a seed node.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        seeds.join(",")
    }

    /// The port of the master that serves `key`'s slot, as a live server sees it (`None` while
    /// that master is failing and no replica has taken over yet).
    pub fn owner(&self, key: &str) -> Option<u16> {
        let asker = self.live_port();
        let slot: u16 = cli(asker, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .ok()?;
        cli(asker, &["cluster", "nodes"])
            .lines()
            .find_map(|line| serving(line, slot))
    }

    /// Kills (SIGKILL) the master serving `key`; returns its port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let port = self.owner(key).expect("every slot has a master");
        let i = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("one of ours");
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        port
    }

    /// Waits until `key`'s slot is served by a master other than `dead` and the cluster is ok.
    pub fn wait_failover(&self, key: &str, dead: u16) {
        wait_for("a replica to take over", || {
            let ok = cli(self.live_port(), &["cluster", "info"]).contains("cluster_state:ok");
            ok && self.owner(key).is_some_and(|port| port != dead)
        });
    }

    /// Moves `key`'s slot, with its keys, from its master to another master (what
    /// `redis-cli --cluster reshard` does for one slot); returns (from, to) ports.
    pub fn move_slot_of(&self, key: &str) -> (u16, u16) {
        let from = self.owner(key).expect("every slot has a master");
        let masters: Vec<u16> = cli(from, &["cluster", "nodes"])
            .lines()
            .filter_map(master_port)
            .collect();
        let to = *masters
            .iter()
            .find(|p| **p != from)
            .expect("another master");
        let slot = cli(from, &["cluster", "keyslot", key]).trim().to_string();
        let id = |port: u16| cli(port, &["cluster", "myid"]).trim().to_string();
        let (from_id, to_id) = (id(from), id(to));
        cli(to, &["cluster", "setslot", &slot, "importing", &from_id]);
        cli(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
        let keys = cli(from, &["cluster", "getkeysinslot", &slot, "1000"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if !keys.is_empty() {
            let port = to.to_string();
            let mut args = vec![
                "migrate",
                "127.0.0.1",
                port.as_str(),
                "",
                "0",
                "5000",
                "KEYS",
            ];
            args.extend(keys);
            cli(from, &args);
        }
        for port in masters {
            cli(port, &["cluster", "setslot", &slot, "node", &to_id]);
        }
        (from, to)
    }

    fn live_port(&self) -> u16 {
        self.ports
            .iter()
            .zip(&self.children)
            .find_map(|(p, c)| c.as_ref().map(|_| *p))
            .expect("a live server")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The port of a `CLUSTER NODES` line's server if it is a master not seen failing.
fn master_port(line: &str) -> Option<u16> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let flags = fields.get(2)?;
    if !flags.contains("master") || flags.contains("fail") {
        return None;
    }
    fields
        .get(1)?
        .split('@')
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// The master port of a `CLUSTER NODES` line if it serves `slot`.
fn serving(line: &str, slot: u16) -> Option<u16> {
    let port = master_port(line)?;
    let serves = line.split_whitespace().skip(8).any(|range| {
        let mut ends = range.split('-');
        let (Some(lo), hi) = (ends.next(), ends.next()) else {
            return false;
        };
        match (lo.parse::<u16>(), hi.unwrap_or(lo).parse::<u16>()) {
            (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
            _ => false,
        }
    });
    serves.then_some(port)
}

fn server(dir: &Path, port: u16, bus: u16) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus.to_string(),
        ])
        .arg("--cluster-config-file")
        .arg(dir.join(format!("nodes-{port}.conf")))
        .args(["--cluster-node-timeout", "1000"])
        .args(["--cluster-replica-validity-factor", "0"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null());
    cmd
}

/// One `redis-cli` command's output ("" when it fails).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("its address").port())
        .collect()
}

/// Spawns `cmd` from a thread that lives as long as the test process, with SIGKILL as its
/// parent-death signal (which Linux sends when the spawning thread ends).
fn spawn_kept(cmd: Command) -> Child {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let _ = reply.send(cmd.spawn());
            }
            // Every sender is gone only at exit; park so the children's parent thread lives.
            loop {
                std::thread::park();
            }
        });
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    keeper
        .lock()
        .expect("keeper lock")
        .send((cmd, reply))
        .expect("keeper thread");
    answer
        .recv()
        .expect("keeper answer")
        .expect("redis-server is required for the Redis Cluster tests (see .ci/run)")
}
