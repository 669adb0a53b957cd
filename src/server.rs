//! The HTTP server of a node: actix-web's `App` on actix-http's HTTP/1 service, run by
//! actix-server with the settings `HttpServer` would apply (workers, keep-alive, the request
//! head deadline, `TCP_NODELAY`, graceful shutdown). It is built by hand for one reason: the
//! upgrade hook. A WebSocket handshake goes through the same `App` (middleware, limits,
//! authentication, the `/ws` handler); when the handler accepts it (`101` carrying
//! [`Accepted`]), the hook writes the `101` and the connection leaves the HTTP dispatcher for
//! good, driven from then on by [`socket::serve`] alone.

use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_codec::Framed;
use actix_cors::Cors;
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::h1::{self, Message};
use actix_http::{ConnectionType, HttpService, KeepAlive, Request, Response};
use actix_service::{fn_factory, fn_service, map_config, IntoServiceFactory, Service};
use actix_service::{ServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, DefaultHeaders, ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpResponse};
use futures_util::SinkExt;
use tokio::net::TcpStream;

use crate::metrics::Metrics;
use crate::realtime::socket::{self, Accepted};
use crate::state::AppState;

/// How long a client may take to accept the handshake's answer.
const HANDSHAKE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// `HttpServer`'s default: how long a closing HTTP connection may take to shut down.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds the node's HTTP server (REST and the `/ws` upgrade) to `listener`.
pub fn http_server(state: AppState, listener: TcpListener) -> anyhow::Result<Server> {
    let settings = state.settings.clone();
    let addr = listener.local_addr()?;
    let data = web::Data::new(state);
    let builder = Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    let server = builder
        .workers(settings.workers)
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        .disable_signals()
        .listen("echo-http", listener, move || {
            let make_app = {
                let data = data.clone();
                move || {
                    let app = app(data.clone())
                        .into_factory()
                        .map_err(|e: actix_web::Error| Response::from(e.error_response()));
                    // `AppConfig::new` is crate-private; this is the constructor actix-test
                    // uses, given what `HttpServer::listen` gives it (plain HTTP, the bound
                    // address as the host).
                    map_config(app, move |()| {
                        AppConfig::__priv_test_new(false, addr.to_string(), addr)
                    })
                }
            };
            let signal = shutdown.clone();
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = signal.clone();
                    async move { signal.notified().await }
                })
                .keep_alive(KeepAlive::default())
                // A client must send a request's head within this time (408 after it).
                .client_request_timeout(settings.limits.header_timeout)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .h1_allow_half_closed(true)
                .local_addr(addr)
                // Small frames (tokens, acks) must not wait for the peer's delayed ACK (Nagle).
                .tcp_nodelay(settings.tcp_nodelay)
                .upgrade(upgrade_hook(make_app.clone(), data.metrics.clone()))
                .finish(make_app())
                .tcp()
        })?
        .run();
    Ok(server)
}

/// The upgrade hook: every `Connection: Upgrade` request of a connection comes here with the
/// connection itself, and goes through the `App` (`make_app`) like any other request.
fn upgrade_hook<F, S, B>(
    make_app: F,
    metrics: Arc<Metrics>,
) -> impl ServiceFactory<
    (Request, Framed<TcpStream, h1::Codec>),
    Config = (),
    Response = (),
    Error = actix_web::Error,
    InitError = (),
>
where
    F: Fn() -> S + 'static,
    S: ServiceFactory<
            Request,
            Config = (),
            Response = ServiceResponse<B>,
            Error = Response<BoxBody>,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    fn_factory(move || {
        let factory = make_app();
        let metrics = metrics.clone();
        async move {
            let app = Rc::new(factory.new_service(()).await?);
            Ok(fn_service(
                move |(req, framed): (Request, Framed<TcpStream, h1::Codec>)| {
                    let (app, metrics) = (app.clone(), metrics.clone());
                    async move {
                        let res = match app.call(req).await {
                            Ok(res) => Response::from(res).map_into_boxed_body(),
                            Err(res) => res,
                        };
                        upgraded(res, framed, metrics).await;
                        Ok::<_, actix_web::Error>(())
                    }
                },
            ))
        }
    })
}

/// Writes the `App`'s answer to an upgrade request. A `101` carrying [`Accepted`] hands the
/// connection to the WebSocket; any other answer is written and the connection closed.
async fn upgraded(
    mut res: Response<BoxBody>,
    mut framed: Framed<TcpStream, h1::Codec>,
    metrics: Arc<Metrics>,
) {
    let accepted = res.extensions_mut().remove::<Accepted>();
    match accepted {
        Some(accepted) if res.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let head = Message::Item((res.drop_body(), BodySize::None));
            let sent = tokio::time::timeout(HANDSHAKE_WRITE_TIMEOUT, framed.send(head)).await;
            if !matches!(sent, Ok(Ok(()))) {
                return;
            }
            let parts = framed.into_parts();
            // The HTTP/1 codec and the write buffer (with the capacity the dispatcher gave it)
            // are dropped here, not kept for the socket's lifetime; the read buffer holds
            // only what the client sent after the handshake, if anything.
            let (io, read_buf) = (parts.io, parts.read_buf);
            drop((parts.codec, parts.write_buf));
            // A task of its own: the HTTP connection's task (sized for the dispatcher) ends
            // here and is freed. Shutdown waits for the sockets (`startup::shutdown`).
            actix_rt::spawn(socket::serve(io, read_buf, accepted, metrics));
        }
        _ => {
            res.head_mut().set_connection_type(ConnectionType::Close);
            let (head, body) = res.into_parts();
            let write = async {
                let body = actix_http::body::to_bytes(body).await.unwrap_or_default();
                let size = BodySize::Sized(body.len() as u64);
                framed.feed(Message::Item((head, size))).await?;
                if !body.is_empty() {
                    framed.feed(Message::Chunk(Some(body))).await?;
                }
                framed.send(Message::Chunk(None)).await
            };
            let _ = tokio::time::timeout(HANDSHAKE_WRITE_TIMEOUT, write).await;
        }
    }
}

/// The application: middleware, routes and the JSON 404.
fn app(
    data: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody + 'static>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let settings = data.settings.clone();
    let origins = settings.cors_allowed_origins.clone();
    let cors = Cors::default()
        .allowed_origin_fn(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| origins.iter().any(|a| a == o))
        })
        .allow_any_method()
        .allow_any_header()
        .expose_headers([
            "x-request-id",
            "x-vercel-ai-data-stream",
            "x-vercel-ai-ui-message-stream",
        ])
        .supports_credentials()
        .block_on_origin_mismatch(false)
        .max_age(3600);
    App::new()
        .app_data(data)
        .app_data(web::PayloadConfig::new(settings.max_json_bytes))
        .wrap(
            ErrorHandlers::new()
                .handler(StatusCode::NOT_FOUND, json_detail)
                .handler(StatusCode::METHOD_NOT_ALLOWED, json_detail),
        )
        .wrap(cors)
        .wrap(
            DefaultHeaders::new()
                .add(("x-content-type-options", "nosniff"))
                .add(("x-frame-options", "DENY"))
                .add(("referrer-policy", "no-referrer")),
        )
        .wrap(from_fn(crate::routes::middleware::guard))
        .wrap(from_fn(crate::routes::middleware::track))
        .configure(crate::routes::configure)
        .default_service(web::to(|| async {
            HttpResponse::NotFound().json(serde_json::json!({"detail": "Not Found"}))
        }))
}
/// Gives actix's bare 404/405 responses FastAPI's `{"detail": …}` body; JSON errors pass as is.
fn json_detail<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed",
        _ => "Not Found",
    };
    let (req, old) = res.into_parts();
    let mut new = HttpResponse::build(status).json(serde_json::json!({"detail": detail}));
    if let Some(allow) = old.headers().get(header::ALLOW) {
        new.headers_mut().insert(header::ALLOW, allow.clone());
    }
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, new).map_into_right_body(),
    ))
}
