//! A WebSocket test client speaking docs/PROTOCOL.md.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestApp;

/// How long a test waits for one frame before failing.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

/// A connected client; `welcome` is already read.
pub struct WsClient {
    /// The socket.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `welcome` frame.
    pub welcome: Value,
    /// Frames read while looking for a reply, returned by later reads in order.
    backlog: std::collections::VecDeque<Value>,
}

/// How a connection attempt ended.
pub enum Connect {
    /// Upgraded.
    Open(Box<WsClient>),
    /// Refused with this HTTP status.
    Refused(u16),
}

impl WsClient {
    /// Connects with `?token=` and reads `welcome`.
    pub async fn connect(app: &TestApp, token: &str) -> WsClient {
        Self::connect_port(app.port, token).await
    }

    /// Connects to a server on `port`.
    pub async fn connect_port(port: u16, token: &str) -> WsClient {
        match Self::try_connect_port(port, token, None).await {
            Connect::Open(c) => *c,
            Connect::Refused(s) => panic!("upgrade refused with {s}"),
        }
    }

    /// Connects with an optional `Origin`, reporting a refusal instead of panicking.
    pub async fn try_connect(app: &TestApp, token: &str, origin: Option<&str>) -> Connect {
        Self::try_connect_port(app.port, token, origin).await
    }

    /// As `try_connect`, to a server on `port`.
    pub async fn try_connect_port(port: u16, token: &str, origin: Option<&str>) -> Connect {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://127.0.0.1:{port}/ws?token={token}");
        let mut req = url.into_client_request().expect("request");
        if let Some(o) = origin {
            req.headers_mut()
                .insert("origin", o.parse().expect("origin"));
        }
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("tcp connect");
        let config = WebSocketConfig::default();
        match tokio_tungstenite::client_async_with_config(
            req,
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await
        {
            Ok((ws, _)) => {
                let mut c = WsClient {
                    ws,
                    welcome: Value::Null,
                    backlog: Default::default(),
                };
                let welcome = c.next().await;
                assert_eq!(welcome["type"], "welcome", "first frame: {welcome}");
                c.welcome = welcome;
                Connect::Open(Box::new(c))
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                Connect::Refused(res.status().as_u16())
            }
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("ws send");
    }

    /// Sends a raw text frame.
    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("ws send");
    }

    /// The next JSON frame (control frames skipped); panics on close or timeout.
    pub async fn next(&mut self) -> Value {
        match self.next_or_close().await {
            Ok(v) => v,
            Err(code) => panic!("socket closed with {code:?} while a frame was expected"),
        }
    }

    /// The next JSON frame, or the close code if the socket closed.
    pub async fn next_or_close(&mut self) -> Result<Value, Option<u16>> {
        if let Some(v) = self.backlog.pop_front() {
            return Ok(v);
        }
        loop {
            let msg = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let frame = serde_json::from_str(t.as_str()).expect("server sent JSON");
                    // Every frame must be one that /asyncapi.json describes.
                    super::frame_schema::check_server_frame(&frame);
                    return Ok(frame);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// Reads until a frame of `kind` arrives, returning it (others are skipped).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Reads until the reply carrying `id` arrives; other frames stay queued for `next`.
    pub async fn reply_to(&mut self, id: &str) -> Value {
        let mut skipped = std::collections::VecDeque::new();
        let found = loop {
            let v = self.next().await;
            if v["id"] == id {
                break v;
            }
            skipped.push_back(v);
        };
        skipped.append(&mut self.backlog);
        self.backlog = skipped;
        found
    }

    /// Sends a request with `id` and returns its reply.
    pub async fn request(&mut self, mut v: Value, id: &str) -> Value {
        v["id"] = json!(id);
        self.send(v).await;
        self.reply_to(id).await
    }

    /// Subscribes and returns the `subscribed` frame (frames before it are skipped).
    pub async fn subscribe(&mut self, chat_id: &str) -> Value {
        let r = self
            .request(json!({"type": "subscribe", "chat_id": chat_id}), "sub")
            .await;
        assert_eq!(r["type"], "subscribed", "subscribe reply: {r}");
        r
    }

    /// Reads frames until the socket closes; returns the close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next_or_close().await {
                Ok(_) => continue,
                Err(code) => return code,
            }
        }
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}
