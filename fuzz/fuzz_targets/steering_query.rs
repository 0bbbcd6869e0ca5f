//! A content steering request's query (`/steering/{channel}.json?…`, HLS
//! and DASH parameter names, a session, throughputs): parsed against a
//! configured steering service, garbage ignored and counted, never a panic,
//! and the reload URI it builds from a valid request target stays one line
//! (a first run found the line break an arbitrary string can carry, which
//! no request target can).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_origin::config::OriginConfig;
use strata_origin::steering::metrics::SteeringMetrics;
use strata_origin::steering::query::SteeringQuery;
use strata_origin::steering::Steering;

fn steering() -> &'static Steering {
    static STEERING: OnceLock<Steering> = OnceLock::new();
    STEERING.get_or_init(|| {
        let config = OriginConfig::parse(
            r#"
[server]
http = "127.0.0.1:8080"
[steering]
ttl = "10s"
probe_interval = "2s"
[[steering.pathways]]
id = "cdn-a"
base_url = "https://a.cdn.example.com"
[[steering.pathways]]
id = "cdn-b"
base_url = "https://b.cdn.example.com/"
countries = ["GB", "se"]
"#,
        )
        .expect("config")
        .steering
        .expect("[steering]");
        config
            .init(
                "127.0.0.1:8080".parse().expect("addr"),
                SteeringMetrics::default(),
            )
            .expect("init")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    // Only what a request target can carry (no control bytes, RFC 3986),
    // as the HTTP layer hands it on: the query it parsed, which ends at a
    // `#` (a CI run's input hid `\r` after one, which no handler sees).
    let Ok(target) = format!("/?{query}").parse::<http::uri::PathAndQuery>() else {
        return;
    };
    let Some(query) = target.query() else {
        return;
    };
    if let Ok(parsed) = SteeringQuery::parse(steering(), Some(query), || 7) {
        let uri = parsed.reload_uri("/steering/news.json", "cdn-a");
        assert!(
            !uri.contains(['\r', '\n']),
            "reload URI stays one line: {uri:?}"
        );
    }
});
