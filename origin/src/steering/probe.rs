//! Active probes: every `probe_interval`, each pathway is asked for a real
//! object through its CDN — by default a live channel's media playlist and
//! then its newest segment — measuring availability, time to first byte and
//! the segment's throughput. A probe gets one probe interval to finish.
//! `401`/`403` (a CDN that wants a token) counts as available, unmeasured:
//! give `probe_path` a long-lived probe token (`?token=…`) to measure such a
//! CDN fully; the query goes on to the segment.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::time::Instant;

use super::Steering;
use crate::store::Store;

/// Most bytes a probe reads of one body.
const MAX_BODY: usize = 32 << 20;
/// Path probed when no channel is live and no `probe_path` is set: any
/// answer below 500 shows the CDN is there.
const IDLE_PATH: &str = "/live/strata-steering-probe/master.m3u8";

/// What one probe saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub status: Option<u16>,
    pub timed_out: bool,
    pub error: Option<String>,
    /// Time to the first response's headers.
    pub ttfb: Option<Duration>,
    /// Body bits over body time of the largest object fetched.
    pub bits_per_second: Option<f64>,
}

impl Outcome {
    /// Label value for `strata_steering_probes_total`.
    pub fn result(&self) -> &'static str {
        if self.ok && matches!(self.status, Some(401 | 403)) {
            "refused"
        } else if self.ok {
            "ok"
        } else if self.timed_out {
            "timeout"
        } else if self.status.is_some() {
            "status"
        } else {
            "error"
        }
    }

    pub fn describe(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => format!("HTTP {s}"),
            (None, None) if self.timed_out => "timed out".into(),
            _ => "ok".into(),
        }
    }

    pub fn failed(why: impl Into<String>) -> Outcome {
        Outcome {
            error: Some(why.into()),
            ..Outcome::default()
        }
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The probe client: HTTP/1.1, HTTPS with the system's roots.
pub fn client() -> HttpsClient {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(certs) = rustls_native_certs::load_native_certs() {
        for cert in certs {
            let _ = roots.add(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let https = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(builder.with_root_certificates(roots).with_no_client_auth())
            .https_or_http()
            .enable_http1()
            .build(),
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
            .https_or_http()
            .enable_http1()
            .build(),
    };
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

/// One GET: status, time to headers, body size and body time.
struct Fetched {
    status: u16,
    ttfb: Duration,
    body: Bytes,
    body_time: Duration,
}

async fn get(client: &HttpsClient, url: &str) -> Result<Fetched, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let request = http::Request::get(uri)
        .header(http::header::USER_AGENT, "strata-steering-probe")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let response = client.request(request).await.map_err(|e| {
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        why
    })?;
    let ttfb = started.elapsed();
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Fetched {
        status,
        ttfb,
        body,
        body_time: started.elapsed().saturating_sub(ttfb),
    })
}

/// The path to probe on every pathway now.
pub fn probe_path(store: &Store) -> (String, bool) {
    let live = store
        .channels()
        .into_iter()
        .filter(|c| c.live)
        .find_map(|c| {
            c.renditions
                .iter()
                .find(|r| r.segments > 0 && (r.video_codec.is_some() || r.audio_codec.is_some()))
                .map(|r| {
                    let kind = if r.video_codec.is_some() {
                        "video"
                    } else {
                        "audio"
                    };
                    format!("/live/{}/{}/{kind}.m3u8", c.name, r.name)
                })
        });
    match live {
        Some(path) => (path, true),
        None => (IDLE_PATH.to_owned(), false),
    }
}

/// The last URI line of a media playlist, if relative.
fn newest_segment(playlist: &str) -> Option<&str> {
    let uri = playlist
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))?;
    (!uri.contains("://") && !uri.starts_with('/')).then_some(uri)
}

/// Probes `base` + `path`; a media playlist is followed to its newest segment.
/// `strict`: only 2xx passes (else anything below 500 does).
pub async fn probe(client: &HttpsClient, base: &str, path: &str, strict: bool) -> Outcome {
    let url = format!("{base}{path}");
    let first = match get(client, &url).await {
        Ok(f) => f,
        Err(e) => return Outcome::failed(e),
    };
    // A CDN that refuses us for want of a token is there and answering:
    // available, though nothing is measured beyond the first byte.
    let passed = |s: u16| matches!(s, 200..=299 | 401 | 403) || !strict && s < 500;
    let mut outcome = Outcome {
        ok: passed(first.status),
        status: Some(first.status),
        ttfb: Some(first.ttfb),
        ..Outcome::default()
    };
    let mut measured = (first.body.len(), first.body_time);
    // The probe path's query (a probe token, say) goes to the segment too.
    let (file, query) = match url.split_once('?') {
        Some((file, query)) => (file, Some(query)),
        None => (url.as_str(), None),
    };
    if outcome.ok && first.status < 300 && file.ends_with(".m3u8") {
        let text = String::from_utf8_lossy(&first.body).into_owned();
        if let Some(segment) = newest_segment(&text) {
            let dir = &file[..file.rfind('/').map_or(file.len(), |i| i + 1)];
            let segment = match (query, segment.contains('?')) {
                (Some(q), false) => format!("{dir}{segment}?{q}"),
                _ => format!("{dir}{segment}"),
            };
            match get(client, &segment).await {
                Ok(f) if (200..300).contains(&f.status) => measured = (f.body.len(), f.body_time),
                Ok(f) => {
                    outcome.ok = false;
                    outcome.status = Some(f.status);
                }
                Err(e) => {
                    outcome.ok = false;
                    outcome.error = Some(e);
                }
            }
        }
    }
    if outcome.ok && first.status < 300 && measured.0 > 0 {
        let seconds = measured.1.as_secs_f64().max(1e-4);
        outcome.bits_per_second = Some(measured.0 as f64 * 8.0 / seconds);
    }
    outcome
}

/// Probes every pathway each `probe_interval` until `stop` resolves.
pub async fn run(steering: Arc<Steering>, store: Store, stop: impl Future<Output = ()>) {
    let client = client();
    let interval = steering.config().probe_interval;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let probes = async {
        loop {
            tick.tick().await;
            let (live_path, live) = probe_path(&store);
            let rounds = steering.config().pathways.iter().enumerate().map(|(i, p)| {
                let base = steering.base_url(i).to_owned();
                let (path, strict) = match &p.probe_path {
                    Some(path) => (path.clone(), true),
                    None => (live_path.clone(), live),
                };
                let client = &client;
                async move {
                    let outcome =
                        match tokio::time::timeout(interval, probe(client, &base, &path, strict))
                            .await
                        {
                            Ok(outcome) => outcome,
                            Err(_) => Outcome {
                                timed_out: true,
                                ..Outcome::default()
                            },
                        };
                    (i, outcome)
                }
            });
            for (i, outcome) in futures::future::join_all(rounds).await {
                steering.record_probe(i, &outcome);
            }
        }
    };
    tokio::select! {
        () = probes => {}
        () = stop => {}
    }
}
