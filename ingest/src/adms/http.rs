//! The HTTP shell: an accept loop (plain or TLS) bounded in connections and in time, one axum
//! handler that reads the request with a size limit, asks [`parse::request`] what it is and
//! [`store`] what to answer. Nothing here decides anything.

use super::parse::{self, Query, Request, Table};
use super::store::{self, Answer, Caller};
use super::{AdmsConfig, Timing};
use crate::admit::Reason;
use crate::db::batch::WriterSettings;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Pool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// Time to send the request head, and then the body.
const HEAD_TIMEOUT: Duration = Duration::from_secs(15);
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// What every request needs.
#[derive(Debug)]
pub struct Shared {
    /// The service's pool.
    pub pool: Pool,
    /// The writer's settings (campus zone, rules).
    pub settings: Arc<WriterSettings>,
    /// Poll and retry delays told to terminals.
    pub timing: Timing,
    /// Largest request body read.
    pub max_body: usize,
    /// The service's metrics: the terminal gauges are refreshed into them while serving.
    pub metrics: Arc<crate::metrics::Metrics>,
}

#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// Serves terminals on `listener` until `stop`; connections in flight finish their request.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(shared.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let tracker = tokio_util::task::TaskTracker::new();
    tracker.spawn(super::views::refresh_gauges(
        shared.pool.clone(),
        shared.metrics.clone(),
        stop.clone(),
    ));
    let mut last_warn: Option<std::time::Instant> = None;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: say so now and then, and try again soon.
                    if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        warn!(error = %e, "ZKTeco endpoint cannot accept; retrying");
                        last_warn = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = router.clone().layer(Extension(Peer(peer)));
        let (tls, stop) = (tls.clone(), stop.clone());
        tracker.spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(stream, svc, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(s, svc, stop).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection<S>(io: S, svc: axum::Router, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(
            hyper_util::rt::TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(svc),
        );
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => { if let Err(e) = r { debug!(error = %e, "terminal connection ended"); } }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(BODY_TIMEOUT, conn).await;
        }
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn refused(serial: &str, r: Reason) -> Response {
    // Anything but OK makes a terminal keep its records and retry after ErrorDelay.
    text(
        StatusCode::FORBIDDEN,
        format!("terminal {serial} refused: {}\n", r.remedy()),
    )
}

async fn handle(
    State(sh): State<Arc<Shared>>,
    Extension(Peer(peer)): Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let q = Query::parse(uri.query().unwrap_or(""));
    let get = method == Method::GET || method == Method::HEAD;
    let req = parse::request(get, uri.path(), &q);
    if req == Request::Unknown {
        return text(StatusCode::NOT_FOUND, "not an iclock endpoint\n".into());
    }
    let Some(serial) = q
        .get("SN")
        .filter(|s| rollcall_protocol::v1::valid_id(s))
        .map(str::to_owned)
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "SN= missing or not 1-64 of [A-Za-z0-9._-]\n".into(),
        );
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > sh.max_body as u64) {
        return too_large(&serial, sh.max_body);
    }
    let body =
        match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, sh.max_body)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => return too_large(&serial, sh.max_body),
            Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "body too slow\n".into()),
        };
    let caller = Caller {
        serial: serial.clone(),
        ip: Some(peer.ip().to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map_or(String::new(), |v| parse::clean(v, 100)),
        push_version: q
            .get("pushver")
            .map_or(String::new(), |v| parse::clean(v, 20)),
    };
    let now = chrono::Utc::now();
    let s = &sh.settings;
    let result = match &req {
        Request::Handshake => store::handshake(&sh.pool, &caller, s, &sh.timing, now).await,
        Request::Poll { info } => store::poll(&sh.pool, &caller, info.as_ref(), s, now).await,
        Request::CommandResults => store::command_results(&sh.pool, &caller, &body, s, now).await,
        Request::Ping => store::ping(&sh.pool, &caller, now)
            .await
            .map(|()| Answer::Ok("OK".into())),
        Request::Upload {
            table: Table::AttLog,
            stamp,
        } => store::attlog(&sh.pool, &caller, stamp.as_deref(), &body, s, &sh.timing, now)
            .await
            .map(|r| match r {
                Ok(st) => {
                    info!(serial = %serial, records = st.records, new = st.new, bad = st.bad, "terminal records committed");
                    Answer::Ok(format!("OK: {}", st.records + st.bad))
                }
                Err(reason) => Answer::Refused(reason),
            }),
        Request::Upload { table, stamp } => {
            store::other_upload(&sh.pool, &caller, table, stamp.as_deref(), &body, s, now)
                .await
                .map(|r| match r {
                    Ok(n) => Answer::Ok(format!("OK: {n}")),
                    Err(reason) => Answer::Refused(reason),
                })
        }
        Request::Unknown => return text(StatusCode::NOT_FOUND, String::new()),
    };
    match result {
        Ok(Answer::Ok(body)) => text(StatusCode::OK, body),
        Ok(Answer::Refused(r)) => {
            debug!(serial = %serial, reason = r.as_str(), "terminal refused");
            refused(&serial, r)
        }
        Err(e) => {
            // Not OK: the terminal keeps its records and sends them again after ErrorDelay.
            warn!(serial = %serial, error = %e, "terminal request not stored; it will retry");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not stored, send again\n".into(),
            )
        }
    }
}

fn too_large(serial: &str, max: usize) -> Response {
    warn!(serial = %serial, max, "terminal request body over the limit");
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body over {max} bytes: lower the terminal's upload batch size\n"),
    )
}

/// Binds `cfg.listen` and loads the TLS material, so a wrong address or certificate stops the
/// start with what to fix.
pub async fn bind(
    cfg: &AdmsConfig,
) -> Result<(TcpListener, Option<tokio_rustls::TlsAcceptor>), String> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("adms.listen {}: {e}", cfg.listen))?;
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(acceptor(cert, key)?),
        _ => None,
    };
    Ok((listener, tls))
}

fn acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|e| format!("adms.tls_cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("adms.tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| format!("adms.tls_cert / adms.tls_key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
