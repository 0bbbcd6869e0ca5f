use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use http::StatusCode;

use super::geoip;
use crate::policy::{CountryCode, GeoConfig, GeoDb, GeoError, GeoRejection};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn code(c: &str) -> Option<CountryCode> {
    CountryCode::parse(c)
}

#[test]
fn country_and_city_databases_give_country_iso_code() {
    for file in [
        "GeoIP2-Country-Test.mmdb",
        "GeoLite2-Country-Test.mmdb",
        "GeoIP2-City-Test.mmdb",
    ] {
        let db = GeoDb::open(geoip(file)).expect(file);
        assert_eq!(
            db.country(ip("81.2.69.142")).expect("lookup"),
            code("GB"),
            "{file}"
        );
        assert_eq!(
            db.country(ip("89.160.20.112")).expect("lookup"),
            code("SE"),
            "{file}"
        );
        assert_eq!(
            db.country(ip("2001:218::1")).expect("lookup"),
            code("JP"),
            "{file}"
        );
        assert_eq!(db.country(ip("127.0.0.1")).expect("lookup"), None, "{file}");
    }
    let db = GeoDb::open(geoip("GeoIP2-Country-Test.mmdb")).expect("db");
    // registered_country is GB here; the country is what counts.
    assert_eq!(db.country(ip("216.160.83.56")).expect("lookup"), code("US"));
    assert_eq!(
        db.country(ip("::ffff:81.2.69.142")).expect("lookup"),
        code("GB")
    );
}

#[test]
fn corrupt_and_missing_databases_are_refused_cleanly() {
    for file in [
        "invalid-data-record-offset.mmdb",
        "libmaxminddb-corrupt-search-tree.mmdb",
    ] {
        let err = GeoDb::open(geoip(file)).expect_err(file);
        assert!(matches!(err, GeoError::Invalid { .. }), "{file}: {err}");
    }
    let err = GeoDb::open("/nonexistent/GeoIP2-Country.mmdb").expect_err("missing");
    assert!(matches!(err, GeoError::Io { .. }), "{err}");
}

/// A scratch copy of a fixture database, so a test can overwrite it.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-geo-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join("db.mmdb");
    std::fs::copy(geoip("GeoIP2-Country-Test.mmdb"), &path).expect("copy");
    path
}

fn replace(path: &PathBuf, from: &str, mtime_offset: u64) {
    std::fs::copy(geoip(from), path).expect("copy");
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    // Coarse filesystem clocks can give two quick writes one mtime; make
    // each change visible.
    file.set_modified(SystemTime::now() + Duration::from_secs(mtime_offset))
        .expect("set mtime");
}

#[test]
fn reload_keeps_the_old_database_when_the_new_file_is_bad() {
    let path = scratch("reload");
    let db = GeoDb::open(&path).expect("db");
    assert!(!db.reload_if_changed().expect("unchanged"));

    replace(&path, "libmaxminddb-corrupt-search-tree.mmdb", 10);
    assert!(db.reload_if_changed().is_err());
    assert_eq!(
        db.country(ip("81.2.69.142")).expect("lookup"),
        code("GB"),
        "old db still serves"
    );
    assert!(!db
        .reload_if_changed()
        .expect("same bad file is not retried"));
    assert!(
        db.reload().is_err(),
        "an explicit reload tries again and fails again"
    );

    std::fs::remove_file(&path).expect("rm");
    assert!(matches!(db.reload(), Err(GeoError::Io { .. })));
    assert_eq!(db.country(ip("89.160.20.112")).expect("lookup"), code("SE"));

    replace(&path, "GeoIP2-City-Test.mmdb", 20);
    assert!(db.reload_if_changed().expect("new file loads"));
    assert_eq!(db.country(ip("2a02:cf40::1")).expect("lookup"), code("NO"));
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

#[tokio::test]
async fn watcher_swaps_in_a_changed_file() {
    let path = scratch("watch");
    let db = std::sync::Arc::new(GeoDb::open(&path).expect("db"));
    assert_eq!(db.country(ip("2.2.3.1")).expect("lookup"), None);
    let mut reloads = db.reloads();
    let task = db.clone().watch(Duration::from_millis(20));
    replace(&path, "GeoIP2-City-Test.mmdb", 10);
    let swapped = tokio::time::timeout(Duration::from_secs(10), reloads.changed()).await;
    task.abort();
    assert!(
        matches!(swapped, Ok(Ok(()))),
        "watcher did not reload within 10 s"
    );
    assert_eq!(*reloads.borrow(), 1);
    assert_eq!(db.country(ip("2.2.3.1")).expect("lookup"), code("GB"));
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

fn config(extra: &str) -> GeoConfig {
    toml::from_str(&format!(
        "database = {:?}\n{extra}",
        geoip("GeoIP2-Country-Test.mmdb")
    ))
    .expect("toml")
}

#[test]
fn deny_and_allow_rules_with_unknown_handling() {
    let policy = config(
        r#"status = 451
unknown = "deny"
rules = [
  { prefix = "/live/uk-only/", allow = ["gb"] },
  { prefix = "/live/", deny = ["GB", "SE"] },
]"#,
    )
    .init()
    .expect("valid");
    let gb = ip("81.2.69.142");
    let us = ip("216.160.83.56");
    let local = ip("127.0.0.1");
    assert_eq!(
        policy.check("/live/a/master.m3u8", gb),
        Err(GeoRejection {
            status: StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            country: code("GB"),
        })
    );
    assert_eq!(policy.check("/live/a/master.m3u8", us), Ok(()));
    assert_eq!(
        policy.check("/live/uk-only/a.m3u8", gb),
        Ok(()),
        "first matching rule decides"
    );
    assert!(policy.check("/live/uk-only/a.m3u8", us).is_err());
    assert!(
        policy.check("/live/a.m3u8", local).is_err(),
        "unknown = deny"
    );
    assert_eq!(policy.check("/vod/a.mp4", gb), Ok(()), "no rule, no check");

    let lenient = config(r#"rules = [{ prefix = "/live/", deny = ["GB"] }]"#)
        .init()
        .expect("valid");
    assert_eq!(
        lenient.check("/live/a.m3u8", local),
        Ok(()),
        "unknown defaults to allow"
    );
    let denied = lenient.check("/live/a.m3u8", gb).expect_err("GB");
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.as_str(), "geo");
    assert_eq!(
        lenient.trusted_proxies(),
        [ipnet::IpNet::from(ip("127.0.0.1"))]
    );
}

#[test]
fn geo_config_errors_name_the_key() {
    let err = |extra: &str| config(extra).init().expect_err(extra).to_string();
    assert_eq!(err("status = 404"), "geo.status: must be 403 or 451");
    assert_eq!(
        err(r#"rules = [{ prefix = "/live/", deny = ["GB"], allow = ["SE"] }]"#),
        "geo.rules[0]: set exactly one of allow or deny"
    );
    assert_eq!(
        err(r#"rules = [{ prefix = "/live/" }]"#),
        "geo.rules[0]: set exactly one of allow or deny"
    );
    assert_eq!(
        err(
            r#"rules = [{ prefix = "/a/", deny = ["GB"] }, { prefix = "/live/", deny = ["GB", "UK1"] }]"#
        ),
        "geo.rules[1].deny[1]: \"UK1\" is not a two-letter country code"
    );
    assert_eq!(
        err(r#"rules = [{ prefix = "live", deny = ["GB"] }]"#),
        "geo.rules[0].prefix: must start with '/'"
    );
    assert!(err(r#"trusted_proxies = ["10.0.0.0/33"]"#).starts_with("geo.trusted_proxies[0]:"));
    let corrupt: GeoConfig = toml::from_str(&format!(
        "database = {:?}",
        geoip("invalid-data-record-offset.mmdb")
    ))
    .expect("toml");
    assert!(corrupt
        .init()
        .expect_err("corrupt")
        .to_string()
        .starts_with("geo.database: "));
    assert!(
        toml::from_str::<GeoConfig>("database = \"x\"\nrule = []").is_err(),
        "unknown keys refused"
    );
    let ok = config(r#"trusted_proxies = ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]"#)
        .init()
        .expect("valid");
    assert_eq!(ok.trusted_proxies().len(), 3);
}
