//! ffmpeg publishes MPEG-TS over SRT (libsrt) to `ingest::srt::serve`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use strata_origin::ingest::srt::{self, SrtSettings};
use strata_origin::ingest::{IngestAuth, IngestMetrics};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::support::{
    assert_ffmpeg_stream, ffmpeg_exit, ffmpeg_publish, ffmpeg_publish_with, init_logs, Collector,
};

const PASSPHRASE: &str = "correct-horse-battery";

struct Server {
    port: u16,
    collector: Collector,
    _stop: oneshot::Sender<()>,
}

async fn start(passphrase: Option<&str>) -> Server {
    init_logs();
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let collector = Collector::new();
    let keys = HashMap::from([("news".to_owned(), vec!["s3cret".to_owned()])]);
    let auth = IngestAuth::new(keys, None, true, 16);
    let settings = SrtSettings {
        latency: Duration::from_millis(300),
        passphrase: passphrase.map(str::to_owned),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(srt::serve(
        socket,
        settings,
        Arc::new(collector.clone()),
        Arc::new(auth),
        IngestMetrics::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        port,
        collector,
        _stop: stop,
    }
}

async fn publish_and_check(server: &Server, query: &str) {
    // linger: libsrt's live mode otherwise drops what is unsent at close.
    let url = format!("srt://127.0.0.1:{}?{query}&linger=3", server.port);
    let (ok, stderr) =
        ffmpeg_exit(ffmpeg_publish(&url, "mpegts", 3), Duration::from_secs(12)).await;
    assert!(ok, "ffmpeg failed: {stderr}");
    server
        .collector
        .wait_for(Duration::from_secs(5), "publisher to go away", |p| {
            p.len() == 1 && p[0].closed
        })
        .await;
    let recorded = &server.collector.snapshot()[0];
    assert_eq!(recorded.protocol, "srt");
    let name = recorded.name.as_ref().expect("name");
    assert_eq!(
        (name.channel.as_str(), name.rendition.as_str()),
        ("news", "main")
    );
    assert_ffmpeg_stream(recorded, 3, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_srt() {
    let server = start(None).await;
    publish_and_check(&server, "streamid=#!::r=live/news,m=publish,s=s3cret").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_srt_with_passphrase() {
    let server = start(Some(PASSPHRASE)).await;
    let query = format!(
        "streamid=live/news?key=s3cret&passphrase={}&pbkeylen=16",
        PASSPHRASE
    );
    publish_and_check(&server, &query).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_or_passphrase_is_refused() {
    let server = start(Some(PASSPHRASE)).await;
    let port = server.port;
    for query in [
        "streamid=#!::r=live/news,m=publish,s=wrong&passphrase=correct-horse-battery&pbkeylen=16"
            .to_owned(),
        "streamid=#!::r=live/news,m=publish,s=s3cret&passphrase=wrong-horse-battery&pbkeylen=16"
            .to_owned(),
        "streamid=#!::r=live/news,m=publish,s=s3cret".to_owned(),
    ] {
        let url = format!("srt://127.0.0.1:{port}?{query}&connect_timeout=2000000");
        let (ok, _) = ffmpeg_exit(ffmpeg_publish(&url, "mpegts", 2), Duration::from_secs(10)).await;
        assert!(!ok, "publish with {query} should fail");
    }
    assert!(server.collector.snapshot().is_empty());
    // Garbage datagrams do not stop the listener.
    let junk = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for len in [1usize, 16, 64, 1500] {
        junk.send_to(&vec![0xa5; len], ("127.0.0.1", port))
            .await
            .expect("send");
    }
    let query = format!(
        "streamid=live/news?key=s3cret&passphrase={}&pbkeylen=32",
        PASSPHRASE
    );
    let url = format!("srt://127.0.0.1:{port}?{query}");
    let (ok, stderr) =
        ffmpeg_exit(ffmpeg_publish(&url, "mpegts", 2), Duration::from_secs(10)).await;
    assert!(ok, "a good publish still works: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hevc_over_srt_is_refused() {
    let server = start(None).await;
    let url = format!("srt://127.0.0.1:{}?streamid=live/sport", server.port);
    let ffmpeg = ffmpeg_publish_with(
        &url,
        "mpegts",
        3,
        &[
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=none",
            "-c:a",
            "aac",
        ],
    );
    server
        .collector
        .wait_for(
            Duration::from_secs(10),
            "the HEVC publish to be dropped",
            |p| p.len() == 1 && p[0].closed,
        )
        .await;
    assert!(server.collector.snapshot()[0].samples.is_empty());
    drop(ffmpeg);
}
