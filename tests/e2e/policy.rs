//! Signed tokens and geo rules through the real edge: every rejection
//! reason, token transport and propagation, country rules.

use std::time::{Duration, SystemTime};

use strata::policy::{sign, GeoConfig, GeoRuleConfig, TokenConfig};

use crate::harness::{client, metric, start_edge, start_origin};

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";
const OTHER_SECRET: &str = "fedcba9876543210fedcba9876543210";

pub fn token_config() -> TokenConfig {
    toml::from_str(&format!(
        "keys = [{{ id = \"2026-11\", secret = \"{SECRET}\" }}]\nrequire = [\"/live/\"]\nclock_skew = \"5s\"\n"
    ))
    .expect("token config")
}

pub fn token(acl: &str, start: SystemTime, ttl: u64, ip: Option<&str>, secret: &str) -> String {
    sign(
        secret,
        acl,
        Duration::from_secs(ttl),
        start,
        ip.map(|i| i.parse().expect("ip")),
        None,
    )
    .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_reason_is_a_403_with_its_reason_and_is_counted() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "token-edge", |c| {
        c.token = Some(token_config())
    })
    .await;
    let now = SystemTime::now();
    let good = token("/live/ch/*", now, 300, None, SECRET);
    let cases = [
        ("missing", None),
        ("malformed", Some("st=1~exp=zz~hmac=00".to_owned())),
        (
            "expired",
            Some(token(
                "/live/ch/*",
                now - Duration::from_secs(600),
                60,
                None,
                SECRET,
            )),
        ),
        (
            "not-yet-valid",
            Some(token(
                "/live/ch/*",
                now + Duration::from_secs(600),
                60,
                None,
                SECRET,
            )),
        ),
        ("acl", Some(token("/live/other/*", now, 300, None, SECRET))),
        (
            "ip",
            Some(token("/live/ch/*", now, 300, Some("203.0.113.9"), SECRET)),
        ),
        (
            "signature",
            Some(token("/live/ch/*", now, 300, None, OTHER_SECRET)),
        ),
        ("malformed", Some("x".repeat(5000))),
    ];
    let client = client();
    for (reason, token) in &cases {
        let url = match token {
            Some(t) => edge.url(&format!("/live/ch/main/1.m4s?token={t}")),
            None => edge.url("/live/ch/main/1.m4s"),
        };
        let r = client.get(url).send().await.expect("response");
        assert_eq!(r.status(), 403, "{reason}");
        assert_eq!(r.headers()["strata-reject-reason"], *reason);
    }
    // `..` and encoded traversal cannot leave the ACL.
    for sneaky in [
        "/live/ch/../other/1.m4s",
        "/live/ch/%2e%2e/other/1.m4s",
        "/live/ch/..%2fother/1.m4s",
    ] {
        let r = client
            .get(edge.url(&format!("{sneaky}?token={good}")))
            .send()
            .await
            .expect("traversal");
        assert_eq!(r.status(), 403, "{sneaky}");
    }
    assert_eq!(
        origin.state.total.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing refused reached the origin"
    );

    let ok = client
        .get(edge.url(&format!("/live/ch/main/1.m4s?token={good}")))
        .send()
        .await
        .expect("ok");
    assert_eq!(ok.status(), 200);
    // Paths outside `require` need no token.
    assert_eq!(
        client
            .get(edge.url("/obj/free.m4s"))
            .send()
            .await
            .expect("free")
            .status(),
        200
    );
    // A cookie carries the token as well as the query does.
    let cookie = client
        .get(edge.url("/live/ch/main/2.m4s"))
        .header("cookie", format!("other=1; token={good}"))
        .send()
        .await
        .expect("cookie");
    assert_eq!(cookie.status(), 200);

    let m = edge.metrics().await;
    for reason in [
        "missing",
        "expired",
        "not-yet-valid",
        "acl",
        "ip",
        "signature",
    ] {
        let line = m
            .lines()
            .find(|l| l.contains("rejection") && l.contains(&format!("reason=\"{reason}\"")))
            .unwrap_or("");
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(
            value >= 1.0,
            "rejections for {reason} are counted: {line:?}"
        );
    }
    let log_safe = metric(
        &m,
        "strata_edge_requests_total{status=\"4xx\",cache=\"denied\",protocol=\"h1\"}",
    );
    assert!(log_safe.unwrap_or(0.0) >= 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_carried_into_playlists_and_mpds_and_never_splits_the_cache() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "prop-edge", |c| {
        c.token = Some(token_config())
    })
    .await;
    let t1 = token("/live/ch/*", SystemTime::now(), 300, None, SECRET);
    let t2 = token(
        "/live/ch/*",
        SystemTime::now() - Duration::from_secs(1),
        300,
        None,
        SECRET,
    );
    let client = client();
    let master = client
        .get(edge.url(&format!("/live/ch/master.m3u8?token={t1}")))
        .send()
        .await
        .expect("master");
    assert_eq!(master.status(), 200);
    assert!(master.headers()["cache-control"]
        .to_str()
        .expect("cc")
        .starts_with("private"));
    let text = master.text().await.expect("text");
    assert!(
        text.contains(&format!("main/video.m3u8?token={t1}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("URI=\"main/audio.m3u8?token={t1}\"")),
        "{text}"
    );
    // The child URL the player will follow is accepted.
    let child = client
        .get(edge.url(&format!("/live/ch/main/video.m3u8?token={t1}")))
        .send()
        .await
        .expect("child");
    assert_eq!(child.status(), 200);

    let mpd = client
        .get(edge.url(&format!("/live/ch/manifest.mpd?token={t2}")))
        .send()
        .await
        .expect("mpd");
    let text = mpd.text().await.expect("mpd text");
    assert!(
        text.contains(&format!("media=\"main/video/$Number$.m4s?token={t2}\"")),
        "{text}"
    );

    // Another viewer's token gets the same cached playlist, rewritten for them.
    let again = client
        .get(edge.url(&format!("/live/ch/master.m3u8?token={t2}")))
        .send()
        .await
        .expect("master 2");
    let text = again.text().await.expect("text");
    assert!(text.contains(&format!("main/video.m3u8?token={t2}")) && !text.contains(&t1));
    assert_eq!(
        origin.state.hits("/live/ch/master.m3u8"),
        1,
        "one cached copy serves every viewer"
    );
    let seen = origin.state.total.load(std::sync::atomic::Ordering::SeqCst);
    assert!(seen >= 2);
}

/// Geo rules from TOML text of the form `r = [{ prefix = …, deny = […] }]`.
pub fn geo_rules(toml_text: &str) -> Vec<GeoRuleConfig> {
    toml::from_str::<toml::Table>(toml_text).expect("rules")["r"]
        .clone()
        .try_into()
        .expect("rules")
}

pub fn geo_config(rules: Vec<GeoRuleConfig>, status: u16) -> GeoConfig {
    let database = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/geoip/GeoIP2-Country-Test.mmdb"
    );
    let mut config: GeoConfig = toml::from_str(&format!(
        "database = \"{database}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\nstatus = {status}\n"
    ))
    .expect("geo");
    config.rules = rules;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn country_rules_use_the_forwarded_address_only_from_trusted_proxies() {
    let origin = start_origin().await;
    let rules = geo_rules(
        "r = [{ prefix = \"/live/\", deny = [\"GB\"] }, { prefix = \"/obj/\", allow = [\"SE\"] }]",
    );
    let edge = start_edge(&[origin.url()], "geo-edge", |c| {
        c.geo = Some(geo_config(rules, 451))
    })
    .await;
    let client = client();
    let from = |ip: &str, path: &str| {
        client
            .get(edge.url(path))
            .header("x-forwarded-for", ip)
            .send()
    };
    let gb = from("81.2.69.142", "/live/ch/1.m4s").await.expect("gb");
    assert_eq!(gb.status(), 451);
    assert_eq!(gb.headers()["strata-reject-reason"], "geo");
    assert_eq!(
        from("89.160.20.112", "/live/ch/1.m4s")
            .await
            .expect("se")
            .status(),
        200
    );
    assert_eq!(
        from("89.160.20.112", "/obj/a.m4s")
            .await
            .expect("se allow")
            .status(),
        200
    );
    assert_eq!(
        from("216.160.83.56", "/obj/a.m4s")
            .await
            .expect("us not allowed")
            .status(),
        451
    );
    // A forged chain: only the address our trusted proxy (127.0.0.1) saw counts.
    let forged = from("81.2.69.142, 89.160.20.112", "/live/ch/2.m4s")
        .await
        .expect("forged");
    assert_eq!(forged.status(), 200, "rightmost untrusted address is SE");
    let forged = from("89.160.20.112, 81.2.69.142", "/live/ch/2.m4s")
        .await
        .expect("forged");
    assert_eq!(forged.status(), 451, "rightmost untrusted address is GB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_geo_database_is_a_config_error_naming_the_key() {
    for file in [
        "libmaxminddb-corrupt-search-tree.mmdb",
        "invalid-data-record-offset.mmdb",
        "missing.mmdb",
    ] {
        let database = format!("{}/tests/fixtures/geoip/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = format!("[upstream]\nurls = [\"http://127.0.0.1:1\"]\n[geo]\ndatabase = \"{database}\"\nrules = []\n");
        let err = strata::config::EdgeConfig::parse(&text).expect_err(file);
        assert!(err.to_string().starts_with("geo.database"), "{file}: {err}");
    }
}

async fn raw_request(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_gives_the_client_address_only_from_trusted_peers() {
    let origin = start_origin().await;
    let rules = geo_rules("r = [{ prefix = \"/live/\", deny = [\"GB\"] }]");
    let edge = start_edge(&[origin.url()], "proxy-edge", |c| {
        c.geo = Some(geo_config(rules, 403));
        c.server.proxy_protocol_from = vec!["127.0.0.1/32".into()];
    })
    .await;
    let request = "GET /live/ch/1.m4s HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n";
    let gb = raw_request(
        edge.addr,
        format!("PROXY TCP4 81.2.69.142 127.0.0.1 40000 80\r\n{request}").as_bytes(),
    )
    .await;
    assert!(gb.starts_with("HTTP/1.1 403"), "v1 header from GB: {gb}");
    let se = raw_request(
        edge.addr,
        format!("PROXY TCP4 89.160.20.112 127.0.0.1 40000 80\r\n{request}").as_bytes(),
    )
    .await;
    assert!(se.starts_with("HTTP/1.1 200"), "v1 header from SE: {se}");
    // v2, binary: IPv4 TCP from 81.2.69.142.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0x00, 0x0c, 81, 2, 69, 142, 127, 0, 0, 1, 0x9c, 0x40, 0x00, 0x50,
    ]);
    v2.extend_from_slice(request.as_bytes());
    let v2 = raw_request(edge.addr, &v2).await;
    assert!(v2.starts_with("HTTP/1.1 403"), "v2 header from GB: {v2}");
    // A trusted peer that sends no header is refused outright.
    let bare = raw_request(edge.addr, request.as_bytes()).await;
    assert!(bare.is_empty(), "no PROXY header, no service: {bare}");
}
