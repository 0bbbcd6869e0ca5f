//! The built-in demo channel, on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use strata_origin::ingest::demo;
use strata_origin::ingest::IngestMetrics;
use strata_origin::media::{TrackKind, TrackParams};
use tokio::sync::oneshot;

use crate::support::Collector;

#[tokio::test(start_paused = true)]
async fn demo_plays_in_real_time_with_continuous_timestamps() {
    let collector = Collector::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let start = tokio::time::Instant::now();
    let task = tokio::spawn(demo::run(
        Arc::new(collector.clone()),
        IngestMetrics::default(),
        async {
            let _ = stopped.await;
        },
    ));
    // Two and a half loops of the 8 s clip.
    collector
        .wait_for(Duration::from_secs(30), "20 s of demo video", |p| {
            p.len() == 1 && p[0].samples(TrackKind::Video).len() >= 500
        })
        .await;
    let elapsed = start.elapsed();
    let _ = stop.send(());
    task.await.expect("demo task").expect("bundled clip parses");

    let r = &collector.snapshot()[0];
    let name = r.name.as_ref().expect("name");
    assert_eq!(
        (name.channel.as_str(), name.rendition.as_str()),
        ("demo", "main")
    );
    assert_eq!(r.protocol, "demo");
    assert!(r.closed, "shutdown drops the sink");
    match &r.params[..] {
        [TrackParams::Video(v), TrackParams::Audio(a)]
        | [TrackParams::Audio(a), TrackParams::Video(v)] => {
            assert_eq!(
                (v.codec.as_str(), v.width, v.height),
                ("avc1.4d401e", 640, 360)
            );
            assert_eq!((a.codec.as_str(), a.sample_rate), ("mp4a.40.2", 48000));
        }
        other => panic!("params {other:?}"),
    }
    let video = r.samples(TrackKind::Video);
    assert!(video[0].keyframe && video[200].keyframe && video[400].keyframe);
    assert!(video.windows(2).all(|w| w[1].dts - w[0].dts == 3600));
    assert!(video.iter().all(|s| s.duration == 3600));
    let audio = r.samples(TrackKind::Audio);
    assert!(audio.windows(2).all(|w| w[1].dts - w[0].dts == 1024));
    // Paced in real time: the 500th frame is due at 19.96 s.
    assert!(
        elapsed >= Duration::from_millis(19_960) && elapsed < Duration::from_millis(20_100),
        "{elapsed:?}"
    );
    // Audio keeps up with video across loops.
    let last_audio = audio.last().expect("audio").dts as f64 / 48_000.0;
    let last_video = video.last().expect("video").dts as f64 / 90_000.0;
    assert!(
        (last_audio - last_video).abs() < 0.05,
        "{last_audio} vs {last_video}"
    );
}
