//! What a shared cache owes the requests behind it (RFC 9111): the fill
//! carries its leader's end-to-end headers, `Vary` keeps variants apart
//! (also between coalesced requests), credentials keep a response private
//! unless it says otherwise, and other methods pass through on configured
//! prefixes and invalidate what was stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::harness::{client, start_edge};

/// An origin whose answers depend on request headers, counting what it sees.
#[derive(Default)]
struct Seen {
    /// (method, path) → requests.
    hits: Mutex<HashMap<(String, String), u64>>,
    /// The headers of the last request per path.
    headers: Mutex<HashMap<String, HeaderMap>>,
    /// Body last PUT per path.
    stored: Mutex<HashMap<String, String>>,
}

impl Seen {
    fn hits(&self, method: &str, path: &str) -> u64 {
        let key = (method.to_owned(), path.to_owned());
        self.hits.lock().get(&key).copied().unwrap_or(0)
    }
}

fn value(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned()
}

/// `/echo/{kind}/{name}`: the body names what the request sent.
/// `kind` picks the response's caching headers.
async fn echo(
    State(seen): State<Arc<Seen>>,
    Path((kind, name)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let path = format!("/echo/{kind}/{name}");
    *seen
        .hits
        .lock()
        .entry((method.to_string(), path.clone()))
        .or_default() += 1;
    seen.headers.lock().insert(path.clone(), headers.clone());
    let (cc, vary, body) = match kind.as_str() {
        "lang" => (
            "max-age=60",
            Some("Accept-Language"),
            value(&headers, "accept-language"),
        ),
        // Long enough that the other requests of a burst join the fill.
        "slow-lang" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            (
                "max-age=60",
                Some("Accept-Language"),
                value(&headers, "accept-language"),
            )
        }
        "auth" => ("max-age=60", None, value(&headers, "authorization")),
        "auth-public" => ("public, max-age=60", None, value(&headers, "authorization")),
        _ => ("max-age=60", None, "plain".to_owned()),
    };
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, cc.parse().expect("cc"));
    if let Some(vary) = vary {
        h.insert(header::VARY, vary.parse().expect("vary"));
    }
    response
}

/// `/rw/{name}`: GET answers what was last PUT (cacheable), PUT/DELETE change it.
async fn rw(
    State(seen): State<Arc<Seen>>,
    Path(name): Path<String>,
    method: Method,
    body: String,
) -> Response {
    let path = format!("/rw/{name}");
    *seen
        .hits
        .lock()
        .entry((method.to_string(), path.clone()))
        .or_default() += 1;
    match method {
        Method::PUT => {
            seen.stored.lock().insert(path, body);
            StatusCode::CREATED.into_response()
        }
        Method::DELETE => {
            seen.stored.lock().remove(&path);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => {
            let body = seen
                .stored
                .lock()
                .get(&path)
                .cloned()
                .unwrap_or_else(|| "empty".into());
            ([(header::CACHE_CONTROL, "max-age=60")], body).into_response()
        }
    }
}

struct Origin {
    url: String,
    seen: Arc<Seen>,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Origin {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/echo/{kind}/{name}", get(echo))
        .route("/rw/{name}", get(rw).put(rw).delete(rw).post(rw))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Origin {
        url,
        seen,
        _stop: stop,
    }
}

async fn get_text(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let mut request = client().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let r = request.send().await.expect("request");
    let status = r.status();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

#[tokio::test]
async fn the_fill_carries_the_leaders_end_to_end_headers_and_not_the_edges_own() {
    let origin = start().await;
    let edge = start_edge(std::slice::from_ref(&origin.url), "fwd-edge", |_| {}).await;
    let (status, _, _) = get_text(
        &edge.url("/echo/plain/a?token=secret"),
        &[
            ("test-id", "t-1"),
            ("req-num", "1"),
            ("accept-language", "fr"),
            ("cookie", "token=secret; session=s"),
            ("cache-control", "no-cache"),
            ("range", "bytes=0-1"),
            ("cmcd-request", "bl=1000"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    let seen = origin.seen.headers.lock()["/echo/plain/a"].clone();
    for (name, expected) in [
        ("test-id", "t-1"),
        ("req-num", "1"),
        ("accept-language", "fr"),
    ] {
        assert_eq!(value(&seen, name), expected, "{name} reaches the origin");
    }
    for name in ["cookie", "cache-control", "range", "cmcd-request"] {
        assert!(!seen.contains_key(name), "{name} must not reach the origin");
    }
    assert!(
        value(&seen, "via").ends_with("fwd-edge"),
        "the edge's own Via"
    );
}

#[tokio::test]
async fn vary_keeps_variants_apart_in_the_cache() {
    let origin = start().await;
    let edge = start_edge(std::slice::from_ref(&origin.url), "vary-edge", |_| {}).await;
    let url = edge.url("/echo/lang/a");
    for round in 0..2 {
        for lang in ["fr", "de", "fr, en"] {
            let (status, headers, body) = get_text(&url, &[("accept-language", lang)]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, lang, "round {round}: the {lang:?} variant");
            assert_eq!(headers["vary"], "Accept-Language");
        }
    }
    let (_, _, body) = get_text(&url, &[]).await;
    assert_eq!(body, "none", "no Accept-Language is a variant of its own");
    assert_eq!(
        origin.seen.hits("GET", "/echo/lang/a"),
        4,
        "each of the four variants is fetched once, then served from cache"
    );
}

#[tokio::test]
async fn coalesced_requests_share_a_fill_only_when_they_select_the_same_variant() {
    let origin = start().await;
    let edge = start_edge(std::slice::from_ref(&origin.url), "vary-herd-edge", |_| {}).await;
    let url = edge.url("/echo/slow-lang/a");
    let requests = (0..20).map(|i| {
        let url = url.clone();
        let lang = if i % 2 == 0 { "fr" } else { "de" };
        async move { (lang, get_text(&url, &[("accept-language", lang)]).await) }
    });
    for (lang, (status, _, body)) in futures::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, lang, "a {lang} request got another variant");
    }
    assert_eq!(
        origin.seen.hits("GET", "/echo/slow-lang/a"),
        2,
        "one upstream fetch per variant"
    );
}

#[tokio::test]
async fn credentials_keep_a_response_private_unless_it_says_public() {
    let origin = start().await;
    let edge = start_edge(std::slice::from_ref(&origin.url), "auth-edge", |_| {}).await;
    let private = edge.url("/echo/auth/a");
    let (_, _, body) = get_text(&private, &[("authorization", "Basic YWxpY2U6eA==")]).await;
    assert_eq!(
        body, "Basic YWxpY2U6eA==",
        "Authorization reaches the origin"
    );
    let (_, _, body) = get_text(&private, &[]).await;
    assert_eq!(body, "none", "another client never gets alice's answer");
    let (_, _, body) = get_text(&private, &[("authorization", "Basic Ym9iOnk=")]).await;
    assert_eq!(body, "Basic Ym9iOnk=", "nor does bob");
    assert_eq!(origin.seen.hits("GET", "/echo/auth/a"), 3);

    // RFC 9111 §3.5: `public` lets a shared cache reuse it.
    let public = edge.url("/echo/auth-public/a");
    let (_, _, first) = get_text(&public, &[("authorization", "Basic YWxpY2U6eA==")]).await;
    let (_, headers, again) = get_text(&public, &[]).await;
    assert_eq!(again, first);
    assert!(
        headers["cache-status"]
            .to_str()
            .expect("ascii")
            .contains("hit"),
        "{headers:?}"
    );
    assert_eq!(origin.seen.hits("GET", "/echo/auth-public/a"), 1);
}

#[tokio::test]
async fn other_methods_pass_through_on_configured_prefixes_and_invalidate() {
    let origin = start().await;
    let edge = start_edge(std::slice::from_ref(&origin.url), "rw-edge", |c| {
        c.cache.pass_through = vec!["/rw/".into()];
    })
    .await;
    let url = edge.url("/rw/a");
    let client = client();
    assert_eq!(get_text(&url, &[]).await.2, "empty");
    assert_eq!(get_text(&url, &[]).await.2, "empty");
    assert_eq!(origin.seen.hits("GET", "/rw/a"), 1, "cached");

    let put = client.put(&url).body("v1").send().await.expect("put");
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(origin.seen.hits("PUT", "/rw/a"), 1);
    assert_eq!(
        get_text(&url, &[]).await.2,
        "v1",
        "the PUT invalidated the cached copy"
    );
    let delete = client.delete(&url).send().await.expect("delete");
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    assert_eq!(get_text(&url, &[]).await.2, "empty");
    assert_eq!(origin.seen.hits("GET", "/rw/a"), 3);

    // Elsewhere the edge refuses them and the origin never hears of it.
    let refused = client
        .put(edge.url("/echo/plain/a"))
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(origin.seen.hits("PUT", "/echo/plain/a"), 0);
}
