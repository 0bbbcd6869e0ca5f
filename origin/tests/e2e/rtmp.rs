//! ffmpeg publishes over RTMP to `ingest::rtmp::serve`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use strata_origin::ingest::{rtmp, IngestAuth, IngestMetrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::support::{
    assert_ffmpeg_stream, ffmpeg_exit, ffmpeg_publish, ffmpeg_publish_with, init_logs,
    logged_lines, Collector,
};

struct Server {
    port: u16,
    collector: Collector,
    registry: Registry,
    _stop: oneshot::Sender<()>,
}

async fn start(auth: IngestAuth) -> Server {
    init_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let collector = Collector::new();
    let mut registry = Registry::default();
    let metrics = IngestMetrics::register(&mut registry);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(rtmp::serve(
        listener,
        Arc::new(collector.clone()),
        Arc::new(auth),
        metrics,
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        port,
        collector,
        registry,
        _stop: stop,
    }
}

fn keyed_auth() -> IngestAuth {
    let keys = HashMap::from([("news".to_owned(), vec!["s3cret".to_owned()])]);
    IngestAuth::new(keys, None, false, 16)
}

fn metrics_text(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_h264_aac_over_rtmp() {
    let server = start(keyed_auth()).await;
    let url = format!("rtmp://127.0.0.1:{}/live/news.720p?key=s3cret", server.port);
    let ffmpeg = ffmpeg_publish(&url, "flv", 3);
    let (ok, stderr) = ffmpeg_exit(ffmpeg, Duration::from_secs(12)).await;
    assert!(ok, "ffmpeg failed: {stderr}");
    server
        .collector
        .wait_for(Duration::from_secs(3), "publisher to go away", |p| {
            p.len() == 1 && p[0].closed
        })
        .await;
    let recorded = &server.collector.snapshot()[0];
    let name = recorded.name.as_ref().expect("name");
    assert_eq!(
        (name.channel.as_str(), name.rendition.as_str()),
        ("news", "720p")
    );
    assert_eq!(recorded.protocol, "rtmp");
    assert_ffmpeg_stream(recorded, 3, false);
    let text = metrics_text(&server.registry);
    assert!(
        text.contains("ingest_publisher_connects_total{protocol=\"rtmp\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ingest_frames_total{protocol=\"rtmp\",track=\"video\"} 75"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused() {
    let server = start(keyed_auth()).await;
    for name in ["news?key=wrong", "news", "sport?key=s3cret", "bad%20name"] {
        let url = format!("rtmp://127.0.0.1:{}/live/{name}", server.port);
        let (ok, _) = ffmpeg_exit(ffmpeg_publish(&url, "flv", 3), Duration::from_secs(8)).await;
        assert!(!ok, "ffmpeg publish to {name} should fail");
    }
    assert!(
        server.collector.snapshot().is_empty(),
        "nothing was published"
    );
    let text = metrics_text(&server.registry);
    assert!(
        text.contains("ingest_publish_refusals_total{protocol=\"rtmp\",reason=\"unauthorised\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("ingest_publish_refusals_total{protocol=\"rtmp\",reason=\"bad_name\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_does_not_take_the_server_down() {
    let server = start(IngestAuth::open()).await;
    let addr = format!("127.0.0.1:{}", server.port);
    // Not RTMP at all.
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // A valid C0 and C1, then a truncated C2.
    let mut s2 = TcpStream::connect(&addr).await.expect("connect");
    let mut c01 = vec![3u8];
    c01.extend((0..1536u32).map(|i| (i * 7) as u8));
    s2.write_all(&c01).await.expect("write");
    s2.write_all(&[0u8; 100]).await.expect("write");
    drop(s2);
    // A complete handshake followed by junk chunks.
    let mut s3 = TcpStream::connect(&addr).await.expect("connect");
    s3.write_all(&c01).await.expect("write");
    s3.write_all(&vec![0x5a; 1536 + 4096]).await.expect("write");
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s3.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the server hangs up on junk chunks");
    drop(s);
    // A real handshake, then an AMF0 command nested 5000 deep: rml_amf0
    // would recurse until the stack overflows and the process aborts.
    let mut s4 = TcpStream::connect(&addr).await.expect("connect");
    client_handshake(&mut s4).await;
    let mut payload = vec![0x02, 0, 7];
    payload.extend_from_slice(b"connect");
    for _ in 0..5000 {
        payload.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
    }
    let mut wire = vec![0x03, 0, 0, 0];
    wire.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    wire.extend_from_slice(&[20, 0, 0, 0, 0]);
    for (i, chunk) in payload.chunks(128).enumerate() {
        if i > 0 {
            wire.push(0xc3);
        }
        wire.extend_from_slice(chunk);
    }
    s4.write_all(&wire).await.expect("write");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s4.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server hangs up on deep AMF");

    let url = format!("rtmp://127.0.0.1:{}/live/demo2", server.port);
    let (ok, stderr) = ffmpeg_exit(ffmpeg_publish(&url, "flv", 2), Duration::from_secs(10)).await;
    assert!(ok, "a good publish after garbage works: {stderr}");
    server
        .collector
        .wait_for(Duration::from_secs(3), "the good publish", |p| {
            p.len() == 1 && p[0].closed && p[0].samples.len() > 40
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicked_publisher_is_disconnected() {
    let server = start(IngestAuth::open()).await;
    let url = format!("rtmp://127.0.0.1:{}/live/news", server.port);
    let ffmpeg = ffmpeg_publish(&url, "flv", 10);
    server
        .collector
        .wait_for(Duration::from_secs(8), "first samples", |p| {
            p.len() == 1 && p[0].samples.len() > 10
        })
        .await;
    server.collector.kick.send_replace(true);
    server
        .collector
        .wait_for(Duration::from_secs(3), "sink to be dropped", |p| {
            p[0].closed
        })
        .await;
    let (ok, _) = ffmpeg_exit(ffmpeg, Duration::from_secs(5)).await;
    assert!(!ok, "ffmpeg notices the closed connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_token_publishes() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let auth = IngestAuth::new(HashMap::new(), Some(secret), false, 16);
    let token = auth
        .sign_token(
            "sport",
            std::time::SystemTime::now() + Duration::from_secs(60),
        )
        .expect("secret set");
    let server = start(auth).await;
    let url = format!(
        "rtmp://127.0.0.1:{}/live/sport.480p?token={token}",
        server.port
    );
    let (ok, stderr) = ffmpeg_exit(ffmpeg_publish(&url, "flv", 1), Duration::from_secs(8)).await;
    assert!(ok, "token publish works: {stderr}");
    let url = format!("rtmp://127.0.0.1:{}/live/news?token={token}", server.port);
    let (ok, _) = ffmpeg_exit(ffmpeg_publish(&url, "flv", 1), Duration::from_secs(8)).await;
    assert!(!ok, "a token is bound to its channel");
    server
        .collector
        .wait_for(Duration::from_secs(3), "one publish", |p| {
            p.len() == 1 && p[0].closed && !p[0].samples.is_empty()
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_codec_disconnects() {
    let server = start(IngestAuth::open()).await;
    let url = format!("rtmp://127.0.0.1:{}/live/radio", server.port);
    let ffmpeg = ffmpeg_publish_with(&url, "flv", 3, &["-c:v", "libx264", "-c:a", "libmp3lame"]);
    server
        .collector
        .wait_for(
            Duration::from_secs(8),
            "the MP3 publish to be dropped",
            |p| p.len() == 1 && p[0].closed,
        )
        .await;
    let (ok, _) = ffmpeg_exit(ffmpeg, Duration::from_secs(8)).await;
    assert!(!ok, "ffmpeg sees the connection closed");
    let text = metrics_text(&server.registry);
    assert!(
        text.contains(
            "ingest_publish_refusals_total{protocol=\"rtmp\",reason=\"unsupported_codec\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_publishers() {
    init_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let collector = Collector::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(rtmp::serve(
        listener,
        Arc::new(collector.clone()),
        Arc::new(IngestAuth::open()),
        IngestMetrics::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let url = format!("rtmp://127.0.0.1:{port}/live/news");
    let ffmpeg = ffmpeg_publish(&url, "flv", 10);
    collector
        .wait_for(Duration::from_secs(8), "samples", |p| {
            p.len() == 1 && p[0].samples.len() > 10
        })
        .await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("serve returns after shutdown")
        .expect("no panic");
    assert!(collector.snapshot()[0].closed);
    drop(ffmpeg);
}

/// Client side of the RTMP handshake, with `rml_rtmp`'s implementation.
async fn client_handshake(s: &mut TcpStream) {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    let mut hs = Handshake::new(PeerType::Client);
    let c0c1 = hs.generate_outbound_p0_and_p1().expect("C0C1");
    s.write_all(&c0c1).await.expect("write");
    let mut buf = vec![0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "server closed during handshake");
        match hs.process_bytes(&buf[..n]).expect("handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).await.expect("write");
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                s.write_all(&response_bytes).await.expect("write");
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abr_ladder_is_several_publishes_into_one_channel() {
    let server = start(keyed_auth()).await;
    let publish = |rendition: &str| {
        let url = format!(
            "rtmp://127.0.0.1:{}/live/news.{rendition}?key=s3cret",
            server.port
        );
        ffmpeg_publish(&url, "flv", 2)
    };
    let (hi, lo) = (publish("720p"), publish("480p"));
    let ((ok_hi, e_hi), (ok_lo, e_lo)) = tokio::join!(
        ffmpeg_exit(hi, Duration::from_secs(10)),
        ffmpeg_exit(lo, Duration::from_secs(10))
    );
    assert!(ok_hi && ok_lo, "{e_hi} {e_lo}");
    server
        .collector
        .wait_for(Duration::from_secs(3), "both renditions", |p| {
            p.len() == 2 && p.iter().all(|r| r.closed && r.samples.len() > 50)
        })
        .await;
    let mut names: Vec<(String, String)> = server
        .collector
        .snapshot()
        .iter()
        .filter_map(|r| r.name.clone())
        .map(|n| (n.channel, n.rendition))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("news".to_owned(), "480p".to_owned()),
            ("news".to_owned(), "720p".to_owned())
        ]
    );
}

/// Issue 11: refused RTMP publishes are logged without the keys and tokens
/// their names or application query strings carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_carries_a_stream_key() {
    let server = start(keyed_auth()).await;
    let port = server.port;
    for path in [
        "live/news?key=RTMP-SECRET-1",
        "live/news?token=RTMP-SECRET-2",
        "vod?key=RTMP-SECRET-3/news",
        "live/bad;key=RTMP-SECRET-4",
    ] {
        let url = format!("rtmp://127.0.0.1:{port}/{path}");
        let (ok, _) = ffmpeg_exit(ffmpeg_publish(&url, "flv", 1), Duration::from_secs(10)).await;
        assert!(!ok, "publish to {path} should be refused");
    }
    let text = metrics_text(&server.registry);
    assert!(text.contains("ingest_publish_refusals_total"), "{text}");
    let lines = logged_lines();
    assert!(
        lines.iter().any(|l| l.contains("RTMP connection closed")),
        "the refusals were logged"
    );
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains("RTMP-SECRET")).collect();
    assert!(leaks.is_empty(), "secrets in logs: {leaks:#?}");
}
