//! Several nodes on one Postgres database and one Redis: what a client sees must not depend on
//! the node it landed on. These run against the real Redis and Postgres (CI starts both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod video_support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::redis_cluster::{shared_redis_cluster, RedisCluster};
use common::ws::WsClient;
use common::{
    fresh_postgres_database, shared_redis_url, spawn_on_database, RedisServer, TestApp, TestUser,
};
use serde_json::json;

/// The Redis the nodes share, and how they use it.
#[derive(Clone, Copy, Debug)]
enum Redis {
    /// The shared Redis server, `PUBLISH`/`SUBSCRIBE`.
    Classic,
    /// The shared Redis server, sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`).
    Sharded,
    /// The test binary's Redis Cluster (three masters with a replica each).
    Cluster,
}

impl Redis {
    fn url(self) -> String {
        match self {
            Redis::Cluster => shared_redis_cluster().url(),
            Redis::Classic | Redis::Sharded => shared_redis_url(),
        }
    }

    /// The nodes' settings for this mode besides `REDIS_URL`.
    fn env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Redis::Classic => &[],
            Redis::Sharded => &[("REDIS_SHARDED_PUBSUB", "true")],
            Redis::Cluster => &[("REDIS_CLUSTER", "true")],
        }
    }
}

/// Starts `n` nodes sharing a fresh database and `redis`, isolated from other tests by a
/// channel prefix of their own; returns once every node's broker is connected.
async fn cluster(n: usize, redis: Redis) -> Vec<TestApp> {
    cluster_with(n, redis, &[]).await
}

/// [`cluster`] with further settings for every node.
async fn cluster_with(n: usize, redis: Redis, extra: &[(&str, &str)]) -> Vec<TestApp> {
    cluster_at(n, &redis.url(), redis.env(), extra).await
}

/// [`cluster`] on the Redis at `url`, with the mode's settings `mode` and `extra`.
async fn cluster_at(
    n: usize,
    url: &str,
    mode: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Vec<TestApp> {
    let db = fresh_postgres_database().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let mut nodes = Vec::new();
    for i in 0..n {
        let node_id = format!("node-{}", (b'a' + i as u8) as char);
        let mut env = vec![
            ("REDIS_URL", url),
            ("REDIS_CHANNEL_PREFIX", prefix.as_str()),
            ("ECHO_NODE_ID", node_id.as_str()),
        ];
        env.extend_from_slice(mode);
        env.extend_from_slice(extra);
        nodes.push(spawn_on_database(&db, &env).await);
    }
    for n in &nodes {
        broker_ready(n).await;
    }
    nodes
}

/// Waits until the node's broker reports healthy (its subscriber is connected).
async fn broker_ready(app: &TestApp) {
    for _ in 0..100 {
        let h: serde_json::Value = app.get("/health", None).await.json().await.unwrap();
        if h["services"]["broker"]["status"] == "ok" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("broker never became healthy");
}

/// Subscribes and gives the node a moment to follow the room's Redis channel.
async fn subscribe(c: &mut WsClient, chat: &str) -> serde_json::Value {
    let s = c.subscribe(chat).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    s
}

/// Alice (the owner) on node 0 and Bob (a member) on node 1, both subscribed to a new chat.
async fn alice_and_bob_across(
    nodes: &[TestApp],
) -> (String, TestUser, TestUser, WsClient, WsClient) {
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&nodes[0], &alice, &[&bob]).await;
    let mut a = WsClient::connect(&nodes[0], &alice.token).await;
    let mut b = WsClient::connect(&nodes[1], &bob.token).await;
    subscribe(&mut a, &chat).await;
    subscribe(&mut b, &chat).await;
    (chat, alice, bob, a, b)
}

async fn chat_with(app: &TestApp, owner: &TestUser, members: &[&TestUser]) -> String {
    let chat = app.create_chat(&owner.token, "cluster").await;
    let id = chat["id"].as_str().unwrap().to_string();
    for m in members {
        app.touch(&m.token).await;
        app.add_member(&owner.token, &id, m.id).await;
    }
    id
}

async fn a_message_sent_on_one_node_reaches_members_on_the_others_in_seq_order(redis: Redis) {
    let nodes = cluster(3, redis).await;
    let (alice, bob, carol) = (TestUser::new(), TestUser::new(), TestUser::new());
    let chat = chat_with(&nodes[0], &alice, &[&bob, &carol]).await;
    let mut a = WsClient::connect(&nodes[0], &alice.token).await;
    let mut b = WsClient::connect(&nodes[1], &bob.token).await;
    let mut c = WsClient::connect(&nodes[2], &carol.token).await;
    assert_ne!(a.welcome["node_id"], b.welcome["node_id"]);
    subscribe(&mut a, &chat).await;
    subscribe(&mut b, &chat).await;
    subscribe(&mut c, &chat).await;
    for i in 0..20 {
        let ack = a
            .request(
                json!({"type": "send", "chat_id": chat, "content": format!("m{i}")}),
                &format!("s{i}"),
            )
            .await;
        assert_eq!(ack["type"], "ack");
    }
    for client in [&mut a, &mut b, &mut c] {
        let mut seqs = Vec::new();
        while seqs.len() < 20 {
            let m = client.next_of("message").await;
            seqs.push(m["message"]["seq"].as_i64().unwrap());
        }
        assert_eq!(
            seqs,
            (1..=20).collect::<Vec<_>>(),
            "every node delivers in seq order, once"
        );
    }
}

async fn twenty_senders_on_three_nodes_produce_the_same_order_at_every_receiver(redis: Redis) {
    let nodes = cluster(3, redis).await;
    let owner = TestUser::new();
    let senders: Vec<TestUser> = (0..20).map(|_| TestUser::new()).collect();
    let refs: Vec<&TestUser> = senders.iter().collect();
    let chat = chat_with(&nodes[0], &owner, &refs).await;
    let mut receivers = Vec::new();
    for node in &nodes {
        let mut r = WsClient::connect(node, &owner.token).await;
        subscribe(&mut r, &chat).await;
        receivers.push(r);
    }
    let mut tasks = Vec::new();
    for (i, s) in senders.iter().enumerate() {
        let port = nodes[i % 3].port;
        let token = s.token.clone();
        let chat = chat.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = WsClient::connect_port(port, &token).await;
            c.subscribe(&chat).await;
            for k in 0..5 {
                let ack = c
                    .request(
                        json!({"type": "send", "chat_id": chat, "content": format!("{i}-{k}")}),
                        &format!("k{k}"),
                    )
                    .await;
                assert_eq!(ack["type"], "ack", "{ack}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut orders = Vec::new();
    for r in receivers.iter_mut() {
        let mut seen = Vec::new();
        while seen.len() < 100 {
            let m = r.next_of("message").await;
            seen.push((
                m["message"]["seq"].as_i64().unwrap(),
                m["message"]["content"].as_str().unwrap().to_string(),
            ));
        }
        orders.push(seen);
    }
    assert_eq!(
        orders[0].iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    assert_eq!(orders[0], orders[1], "node b saw the same order as node a");
    assert_eq!(orders[0], orders[2], "node c saw the same order as node a");
    let distinct: BTreeSet<_> = orders[0].iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(distinct.len(), 100);
}

async fn typing_and_chat_changes_cross_nodes(redis: Redis) {
    let nodes = cluster(2, redis).await;
    let (chat, alice, _, mut a, mut b) = alice_and_bob_across(&nodes).await;
    a.send(json!({"type": "typing", "chat_id": chat})).await;
    assert_eq!(b.next_of("typing").await["user_id"], alice.id.to_string());
    let res = nodes[0]
        .send_json(
            reqwest::Method::PUT,
            &format!("/chats/{chat}"),
            Some(&alice.token),
            &json!({"title": "new"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(b.next_of("chat_updated").await["chat"]["title"], "new");
    let res = nodes[0]
        .delete(&format!("/chats/{chat}"), &alice.token)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(b.next_of("chat_deleted").await["chat_id"], chat);
}

/// Reads `message` frames until `want` distinct seqs were seen or the socket closes; returns
/// the seqs in arrival order.
async fn collect(c: &mut WsClient, seen: &mut Vec<i64>, want: usize) -> bool {
    while seen.iter().collect::<BTreeSet<_>>().len() < want {
        match c.next_or_close().await {
            Ok(f) if f["type"] == "message" => seen.push(f["message"]["seq"].as_i64().unwrap()),
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    true
}

async fn clients_of_a_killed_node_reconnect_elsewhere_and_miss_nothing(redis: Redis) {
    let mut nodes = cluster(3, redis).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&nodes[0], &alice, &[&bob]).await;
    let mut sender = WsClient::connect(&nodes[0], &alice.token).await;
    subscribe(&mut sender, &chat).await;
    let mut watcher = WsClient::connect(&nodes[1], &bob.token).await;
    subscribe(&mut watcher, &chat).await;
    let total = 60;
    let send_chat = chat.clone();
    let sending = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..total {
            let ack = sender
                .request(
                    json!({"type": "send", "chat_id": send_chat, "content": format!("k{i}")}),
                    &format!("a{i}"),
                )
                .await;
            acked.push(ack["seq"].as_i64().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked
    });
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let m = watcher.next_of("message").await;
        seen.push(m["message"]["seq"].as_i64().unwrap());
    }
    // Node b dies mid-traffic; bob reconnects to node c with the last seq he has.
    let victim = nodes.remove(1);
    victim.kill().await;
    assert!(
        !collect(&mut watcher, &mut seen, total).await,
        "the killed node's socket drops"
    );
    let mut again = WsClient::connect(&nodes[1], &bob.token).await;
    let since = *seen.iter().max().unwrap();
    again
        .send(json!({"type": "subscribe", "id": "re", "chat_id": chat, "since_seq": since}))
        .await;
    let acked = sending.await.unwrap();
    assert!(collect(&mut again, &mut seen, total).await);
    let mut dedup: Vec<i64> = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(
        dedup, acked,
        "every acked message reached bob exactly once after dedup by seq"
    );
}

/// `sender` sends `total` messages to `chat` on `node` from a socket of its own, one every
/// `pause`, each acked; the task returns the acked seqs.
fn send_paced(
    node: &TestApp,
    sender: &TestUser,
    chat: &str,
    total: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<Vec<i64>> {
    let (port, token, chat) = (node.port, sender.token.clone(), chat.to_string());
    tokio::spawn(async move {
        let mut c = WsClient::connect_port(port, &token).await;
        c.subscribe(&chat).await;
        let mut acked = Vec::new();
        for i in 0..total {
            let ack = c
                .request(
                    json!({"type": "send", "chat_id": chat, "content": format!("p{i}")}),
                    &format!("p{i}"),
                )
                .await;
            assert_eq!(ack["type"], "ack", "{ack}");
            acked.push(ack["seq"].as_i64().unwrap());
            tokio::time::sleep(pause).await;
        }
        acked
    })
}

async fn restarting_redis_during_traffic_loses_no_persisted_message(mode: Redis) {
    let mut redis = RedisServer::start();
    let nodes = cluster_at(2, &redis.url(), mode.env(), &[]).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&nodes[0], &alice, &[&bob]).await;
    let mut watcher = WsClient::connect(&nodes[1], &bob.token).await;
    subscribe(&mut watcher, &chat).await;
    let total = 80;
    let sending = send_paced(&nodes[0], &alice, &chat, total, Duration::from_millis(25));
    tokio::time::sleep(Duration::from_millis(600)).await;
    redis.stop();
    // While Redis is down both nodes keep serving their own sessions.
    let h: serde_json::Value = nodes[1].get("/health", None).await.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();
    let acked = sending.await.unwrap();
    let mut seen = Vec::new();
    assert!(collect(&mut watcher, &mut seen, total).await);
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for s in &seen {
        *counts.entry(*s).or_default() += 1;
    }
    assert!(
        counts.values().all(|n| *n == 1),
        "no message delivered twice"
    );
    let mut got: Vec<i64> = counts.keys().copied().collect();
    got.sort();
    assert_eq!(
        got, acked,
        "every persisted message reached the other node's member"
    );
    broker_ready(&nodes[1]).await;
}

async fn presence_spans_nodes_and_a_crashed_nodes_users_leave_within_the_bound(redis: Redis) {
    let db = fresh_postgres_database().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let url = redis.url();
    let env = |node: &'static str| {
        let mut env = vec![
            ("REDIS_URL", url.clone()),
            ("REDIS_CHANNEL_PREFIX", prefix.clone()),
            ("ECHO_NODE_ID", node.to_string()),
            ("PRESENCE_TTL_SECS", "3".to_string()),
        ];
        env.extend(redis.env().iter().map(|(k, v)| (*k, v.to_string())));
        env
    };
    let start = |node: &'static str| {
        let db = db.clone();
        let vars = env(node);
        async move {
            let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            spawn_on_database(&db, &pairs).await
        }
    };
    let a = start("node-a").await;
    let b = start("node-b").await;
    broker_ready(&a).await;
    broker_ready(&b).await;
    let (alice, bob, carol) = (TestUser::new(), TestUser::new(), TestUser::new());
    let chat = chat_with(&a, &alice, &[&bob, &carol]).await;
    let mut observer = WsClient::connect(&a, &alice.token).await;
    subscribe(&mut observer, &chat).await;
    let mut on_b = WsClient::connect(&b, &bob.token).await;
    subscribe(&mut on_b, &chat).await;
    let bob_id = bob.id.to_string();
    let joined = loop {
        let p = observer.next_of("presence").await;
        if p["user_id"] == bob_id {
            break p;
        }
    };
    assert_eq!(joined["state"], "join", "a member online on B appears on A");
    // A newcomer on A sees bob in `online` although he is connected to B.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut newcomer = WsClient::connect(&a, &carol.token).await;
    let sub = newcomer.subscribe(&chat).await;
    let online: Vec<String> = serde_json::from_value(sub["online"].clone()).unwrap();
    assert!(
        online.contains(&bob_id),
        "online lists users of other nodes: {online:?}"
    );
    // B crashes: no leave is sent by B itself; A notices within the presence TTL.
    let crashed_at = std::time::Instant::now();
    b.kill().await;
    let left = loop {
        let p = observer.next_of("presence").await;
        if p["user_id"] == bob_id {
            break p;
        }
    };
    assert_eq!(left["state"], "leave");
    assert!(
        crashed_at.elapsed() < Duration::from_secs(3 * 3),
        "leave came within the bound (took {:?})",
        crashed_at.elapsed()
    );
}

/// Tokens and the finished reply of a generation, as one watcher saw them.
async fn watch_reply(
    c: &mut WsClient,
    generation_id: &str,
) -> (Vec<(u64, String)>, serde_json::Value) {
    let mut tokens = Vec::new();
    loop {
        let f = c.next().await;
        if f["generation_id"] != generation_id {
            continue;
        }
        match f["type"].as_str() {
            Some("token") => tokens.push((
                f["index"].as_u64().unwrap(),
                f["delta"].as_str().unwrap().to_string(),
            )),
            Some("generation_finished" | "generation_failed") => return (tokens, f),
            _ => {}
        }
    }
}

/// Two nodes on `redis` whose development AI provider streams `tokens` tokens at `per_sec`.
async fn ai_cluster(redis: Redis, per_sec: &str, tokens: &str) -> Vec<TestApp> {
    ai_cluster_with(redis, per_sec, tokens, &[]).await
}

/// [`ai_cluster`] with further settings for both nodes.
async fn ai_cluster_with(
    redis: Redis,
    per_sec: &str,
    tokens: &str,
    extra: &[(&str, &str)],
) -> Vec<TestApp> {
    let mut env = vec![
        ("AI_PROVIDER", "dev"),
        ("AI_DEV_TOKENS_PER_SEC", per_sec),
        ("AI_DEV_FIRST_TOKEN_MS", "10"),
        ("AI_DEV_REPLY_TOKENS", tokens),
    ];
    env.extend_from_slice(extra);
    cluster_with(2, redis, &env).await
}

/// Prompts on `c` and returns the generation id from the ack.
async fn prompt(c: &mut WsClient, chat: &str) -> String {
    let ack = c
        .request(
            json!({"type": "prompt", "chat_id": chat, "content": "hello"}),
            "p",
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    ack["generation_id"].as_str().unwrap().to_string()
}

/// Sends `cancel` for the generation and returns the answer.
async fn cancel(c: &mut WsClient, generation_id: &str) -> serde_json::Value {
    c.request(
        json!({"type": "cancel", "generation_id": generation_id}),
        "cancel",
    )
    .await
}

/// Reads `c` until it has seen `n` tokens of the generation.
async fn until_tokens(c: &mut WsClient, generation_id: &str, n: usize) {
    let mut seen = 0;
    while seen < n {
        let f = c.next().await;
        if f["type"] == "token" && f["generation_id"] == generation_id {
            seen += 1;
        }
    }
}

async fn a_reply_generated_on_one_node_streams_identical_tokens_to_watchers_on_another(
    redis: Redis,
) {
    let nodes = ai_cluster(redis, "400", "60").await;
    let (chat, _, _, mut a, mut b) = alice_and_bob_across(&nodes).await;
    let generation_id = prompt(&mut a, &chat).await;
    let (on_a, end_a) = watch_reply(&mut a, &generation_id).await;
    let (on_b, end_b) = watch_reply(&mut b, &generation_id).await;
    assert_eq!(end_a["type"], "generation_finished");
    assert_eq!(end_b["type"], "generation_finished");
    assert_eq!(on_a.len(), 60);
    assert_eq!(
        on_a, on_b,
        "the watcher on node b saw exactly node a's tokens"
    );
    let indexes: Vec<u64> = on_b.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, (0..60).collect::<Vec<_>>());
    let text: String = on_b.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(end_b["message"]["content"], text);
}

async fn a_late_subscriber_on_another_node_gets_the_reply_so_far_then_the_rest(redis: Redis) {
    let nodes = ai_cluster(redis, "60", "80").await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let chat = chat_with(&nodes[0], &alice, &[&bob]).await;
    let mut a = WsClient::connect(&nodes[0], &alice.token).await;
    subscribe(&mut a, &chat).await;
    let generation_id = prompt(&mut a, &chat).await;
    until_tokens(&mut a, &generation_id, 10).await;

    // Bob arrives on node b mid-reply; node b has never followed this room before.
    let mut b = WsClient::connect(&nodes[1], &bob.token).await;
    b.send(json!({"type": "subscribe", "chat_id": chat, "id": "s"}))
        .await;
    let snapshot = b.next_of("generation_snapshot").await;
    assert_eq!(snapshot["generation_id"], generation_id.as_str());
    let index = snapshot["index"].as_i64().unwrap();
    assert!(
        index >= 9,
        "the snapshot holds the tokens already sent: {snapshot}"
    );
    let (rest, end) = watch_reply(&mut b, &generation_id).await;
    assert_eq!(end["type"], "generation_finished", "{end}");
    let indexes: Vec<u64> = rest.iter().map(|(i, _)| *i).collect();
    let expected: Vec<u64> = ((index + 1) as u64..80).collect();
    assert_eq!(
        indexes, expected,
        "live tokens continue right after the snapshot"
    );
    let text = snapshot["text"].as_str().unwrap().to_string()
        + &rest.iter().map(|(_, d)| d.as_str()).collect::<String>();
    assert_eq!(end["message"]["content"], text.as_str());
}

async fn cancel_from_another_node_stops_the_reply_where_it_runs(redis: Redis) {
    let nodes = ai_cluster(redis, "40", "400").await;
    let (chat, _, bob, mut a, mut b) = alice_and_bob_across(&nodes).await;
    let carol = TestUser::new();
    nodes[1].touch(&carol.token).await;
    let generation_id = prompt(&mut a, &chat).await;
    until_tokens(&mut b, &generation_id, 5).await;

    // Someone outside the chat cannot cancel it from node b, nor learn that it exists.
    let mut c = WsClient::connect(&nodes[1], &carol.token).await;
    let refused = cancel(&mut c, &generation_id).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "not_found", "{refused}");

    let ack = cancel(&mut b, &generation_id).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let (_, end_a) = watch_reply(&mut a, &generation_id).await;
    let (seen_by_b, end_b) = watch_reply(&mut b, &generation_id).await;
    for end in [&end_a, &end_b] {
        assert_eq!(end["type"], "generation_finished", "{end}");
        assert_eq!(end["finish_reason"], "cancelled", "{end}");
    }
    let kept = end_b["message"]["content"].as_str().unwrap();
    assert!(!kept.is_empty(), "the partial reply is stored");
    assert!(
        seen_by_b.len() < 390,
        "stopped long before its 400 tokens ({} more after the first 5)",
        seen_by_b.len()
    );
    // The stored reply is the one both nodes announced.
    let page: serde_json::Value = nodes[1]
        .get(&format!("/chats/{chat}/messages/"), Some(&bob.token))
        .await
        .json()
        .await
        .unwrap();
    let stored = page
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == end_b["message"]["id"])
        .cloned();
    assert_eq!(stored.map(|m| m["content"].clone()), Some(json!(kept)));
}

async fn the_per_user_reply_limit_counts_the_users_replies_on_every_node(redis: Redis) {
    let limit = [("AI_MAX_CONCURRENT_PER_USER", "1")];
    let nodes = ai_cluster_with(redis, "40", "400", &limit).await;
    let (chat, alice, _, mut a, _) = alice_and_bob_across(&nodes).await;
    // Alice's second tab reached node b through the load balancer.
    let mut second_tab = WsClient::connect(&nodes[1], &alice.token).await;
    subscribe(&mut second_tab, &chat).await;
    let generation_id = prompt(&mut a, &chat).await;
    let again = json!({"type": "prompt", "chat_id": chat, "content": "again"});
    let refused = second_tab.request(again.clone(), "p2").await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "rate_limited", "{refused}");

    // Once the first reply is over, node b takes a prompt again.
    assert_eq!(cancel(&mut a, &generation_id).await["type"], "ack");
    watch_reply(&mut a, &generation_id).await;
    let answer = prompt_until_ack(&mut second_tab, &again).await;
    assert_eq!(answer["type"], "ack", "{answer}");
}

/// A prompt is admitted before it is stored, and storing it checks membership: a prompt into a
/// chat the user may not see is answered `not_found`, and the place it took in the cluster-wide
/// per-user count comes back, so a user who probes other chats is not locked out of her own.
async fn a_prompt_into_a_chat_one_may_not_see_gives_its_place_back_on_every_node(redis: Redis) {
    let limit = [("AI_MAX_CONCURRENT_PER_USER", "1")];
    let nodes = ai_cluster_with(redis, "200", "20", &limit).await;
    let (chat, _, _, _a, _b) = alice_and_bob_across(&nodes).await;
    let carol = TestUser::new();
    nodes[0].touch(&carol.token).await;
    let own = chat_with(&nodes[1], &carol, &[]).await;
    // A socket cannot prompt into a chat it could not subscribe to; REST can try.
    for _ in 0..5 {
        let body = common::ai::v4_body(&chat, "peek");
        let res = common::ai::post_stream(&nodes[0], "/chat", &carol.token, &body).await;
        assert_eq!(res.status(), 404);
    }
    // Her own chat, through node b: her one place is free again (the count is shared through
    // Redis and given back as each probe ends, so allow it a moment).
    let mut tab = WsClient::connect(&nodes[1], &carol.token).await;
    subscribe(&mut tab, &own).await;
    let mine = json!({"type": "prompt", "chat_id": own, "content": "mine"});
    let answer = prompt_until_ack(&mut tab, &mine).await;
    assert_eq!(answer["type"], "ack", "{answer}");
    // Nothing of the probes was stored in Alice's chat.
    let stored = common::ai::stored(&nodes[1], &chat).await;
    assert!(stored.iter().all(|m| m.content != "peek"), "{stored:?}");
}

/// Sends `prompt` until it is acknowledged, for a place given back on another node (the shared
/// count shows it a moment later); returns the last answer.
async fn prompt_until_ack(c: &mut WsClient, prompt: &serde_json::Value) -> serde_json::Value {
    let mut answer = serde_json::Value::Null;
    for attempt in 0..50 {
        answer = c.request(prompt.clone(), &format!("p{attempt}")).await;
        if answer["type"] == "ack" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answer
}

async fn a_rest_client_resumes_on_another_node_the_reply_running_on_the_first(redis: Redis) {
    let nodes = ai_cluster(redis, "60", "80").await;
    let (chat, alice, _, mut a, _) = alice_and_bob_across(&nodes).await;
    let path = format!("/chat/{chat}/stream");
    let idle = nodes[1].get(&path, Some(&alice.token)).await;
    assert_eq!(idle.status(), 204, "nothing in flight yet");
    let generation_id = prompt(&mut a, &chat).await;
    until_tokens(&mut a, &generation_id, 10).await;

    // The load balancer sends the resume to node b; the reply runs on node a.
    let res = nodes[1].get(&path, Some(&alice.token)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("x-vercel-ai-ui-message-stream")
            .and_then(|v| v.to_str().ok()),
        Some("v1")
    );
    let resumed = common::ai::body_text(res).await;
    let (_, end) = watch_reply(&mut a, &generation_id).await;
    let parts: Vec<serde_json::Value> = resumed
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let deltas: Vec<&str> = parts
        .iter()
        .filter(|p| p["type"] == "text-delta")
        .map(|p| p["delta"].as_str().unwrap())
        .collect();
    assert!(
        deltas.len() > 1,
        "the text so far, then live tokens: {deltas:?}"
    );
    let words_so_far = deltas[0].split_whitespace().count();
    assert!(
        words_so_far >= 10,
        "the first delta holds the text so far: {deltas:?}"
    );
    assert_eq!(deltas.concat(), end["message"]["content"].as_str().unwrap());
    assert_eq!(parts[0]["type"], "start");
    assert_eq!(parts[0]["messageId"], end["message"]["id"]);
    assert!(resumed.ends_with("data: {\"type\":\"finish\"}\n\ndata: [DONE]\n\n"));
    let after = nodes[1].get(&path, Some(&alice.token)).await;
    assert_eq!(after.status(), 204, "nothing in flight any more");
}

/// On a Redis Cluster of its own, `change` is done to the shard of a room's channel (given the
/// room's hash tag) while a member on node a sends `total` messages; the member on node b must
/// still get every acked message once, in order, and live delivery must work afterwards.
async fn a_redis_cluster_change_mid_traffic_loses_no_acked_message(
    total: usize,
    change: impl FnOnce(&mut RedisCluster, &str),
) {
    let mut redis = RedisCluster::start();
    let nodes = cluster_at(2, &redis.url(), Redis::Cluster.env(), &[]).await;
    let (chat, alice, _, mut a, mut watcher) = alice_and_bob_across(&nodes).await;
    let sending = send_paced(&nodes[0], &alice, &chat, total, Duration::from_millis(40));
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The room's channel and keys share the hash tag `room:<chat>`, so this is their shard.
    change(&mut redis, &format!("{{room:{chat}}}"));
    let acked = sending.await.unwrap();
    let mut seen = Vec::new();
    assert!(collect(&mut watcher, &mut seen, total).await);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "every message once, in seq order: {seen:?}"
    );
    assert_eq!(
        seen, acked,
        "every acked message reached the member on node b"
    );
    for n in &nodes {
        broker_ready(n).await;
    }
    // Live delivery works again through the shard's new master.
    let ack = a
        .request(
            json!({"type": "send", "chat_id": chat, "content": "after"}),
            "after",
        )
        .await;
    let m = watcher.next_of("message").await;
    assert_eq!(m["message"]["seq"], ack["seq"], "{m}");
}

/// The master serving the room is killed: its replica takes over, both nodes follow the channel
/// again on the new master, and what pub/sub lost while the shard was down comes from the
/// database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_master_killed_mid_traffic_loses_no_acked_message() {
    a_redis_cluster_change_mid_traffic_loses_no_acked_message(100, |redis, tag| {
        let dead = redis.kill_master_of(tag);
        redis.wait_failover(tag, dead);
    })
    .await;
}

/// The room's slot moves to another master (a reshard): the old master stops the nodes'
/// subscriptions, and they follow the channel again where it now lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_slot_moved_mid_traffic_loses_no_acked_message() {
    a_redis_cluster_change_mid_traffic_loses_no_acked_message(60, |redis, tag| {
        let (from, to) = redis.move_slot_of(tag);
        assert_eq!(
            redis.owner(tag),
            Some(to),
            "the slot moved from {from} to {to}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_job_on_one_node_reports_progress_to_its_owner_on_another() {
    let db = fresh_postgres_database().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let redis = shared_redis_url();
    // Nodes of one deployment share object storage; here, one local folder.
    let shared = tempfile::tempdir().unwrap();
    let data_dir = shared.path().to_string_lossy().into_owned();
    let mut nodes = Vec::new();
    for node in ["node-a", "node-b"] {
        nodes.push(
            spawn_on_database(
                &db,
                &[
                    ("REDIS_URL", redis.as_str()),
                    ("REDIS_CHANNEL_PREFIX", prefix.as_str()),
                    ("ECHO_NODE_ID", node),
                    ("ECHO_DATA_DIR", data_dir.as_str()),
                ],
            )
            .await,
        );
    }
    for n in &nodes {
        broker_ready(n).await;
    }
    let alice = TestUser::new();
    nodes[0].touch(&alice.token).await;
    let mut on_b = WsClient::connect(&nodes[1], &alice.token).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let media = tempfile::tempdir().unwrap();
    let path = media.path().to_path_buf();
    let file = tokio::task::spawn_blocking(move || {
        video_support::make_video(
            &path,
            "clip",
            video_support::Container::Mp4,
            (320, 240),
            3.0,
            true,
        )
    })
    .await
    .unwrap();
    let accepted = video_support::upload_video(&nodes[0], &alice.token, &file, "video/mp4").await;
    let job_id = accepted["job_id"].as_i64().unwrap();
    let mut last_progress = -1;
    let mut statuses = Vec::new();
    loop {
        let e = on_b.next_of("job").await;
        let job = &e["job"];
        if job["id"] != job_id {
            continue;
        }
        let progress = job["progress"].as_i64().unwrap();
        assert!(progress >= last_progress, "progress never goes back: {job}");
        last_progress = progress;
        let status = job["status"].as_str().unwrap().to_string();
        if statuses.last() != Some(&status) {
            statuses.push(status.clone());
        }
        if video_support::is_terminal(&job["status"]) {
            break;
        }
    }
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("COMPLETED"),
        "{statuses:?}"
    );
    assert!(statuses.contains(&"PROCESSING".to_string()), "{statuses:?}");
    assert_eq!(last_progress, 100);
}

/// Runs each scenario on every kind of Redis: `classic::…` (one server, `PUBLISH`/`SUBSCRIBE`),
/// `sharded::…` (one server, `SPUBLISH`/`SSUBSCRIBE`) and `redis_cluster::…` (a Redis Cluster of
/// three masters with a replica each, sharded pub/sub on each channel's shard).
macro_rules! on_every_redis {
    ($($scenario:ident),* $(,)?) => {
        on_redis!(classic, Classic, $($scenario),*);
        on_redis!(sharded, Sharded, $($scenario),*);
        on_redis!(redis_cluster, Cluster, $($scenario),*);
    };
}

/// A module `$module` running each scenario on `Redis::$mode`.
macro_rules! on_redis {
    ($module:ident, $mode:ident, $($scenario:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Redis::$mode).await;
                }
            )*
        }
    };
}

on_every_redis!(
    a_message_sent_on_one_node_reaches_members_on_the_others_in_seq_order,
    twenty_senders_on_three_nodes_produce_the_same_order_at_every_receiver,
    typing_and_chat_changes_cross_nodes,
    clients_of_a_killed_node_reconnect_elsewhere_and_miss_nothing,
    presence_spans_nodes_and_a_crashed_nodes_users_leave_within_the_bound,
    a_reply_generated_on_one_node_streams_identical_tokens_to_watchers_on_another,
    a_late_subscriber_on_another_node_gets_the_reply_so_far_then_the_rest,
    cancel_from_another_node_stops_the_reply_where_it_runs,
    the_per_user_reply_limit_counts_the_users_replies_on_every_node,
    a_prompt_into_a_chat_one_may_not_see_gives_its_place_back_on_every_node,
    a_rest_client_resumes_on_another_node_the_reply_running_on_the_first,
);

/// A Redis of the test's own is restarted empty mid-traffic (one server in either pub/sub
/// mode; on a Redis Cluster the same is a master killed, below).
mod restarting_redis {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn classic() {
        super::restarting_redis_during_traffic_loses_no_persisted_message(super::Redis::Classic)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sharded() {
        super::restarting_redis_during_traffic_loses_no_persisted_message(super::Redis::Sharded)
            .await;
    }
}
