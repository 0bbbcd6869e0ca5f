//! Key service: CPIX import with the DASH-IF vectors, persistence across a restart.

use super::*;

const CLEAR: &str = include_str!("../../tests/fixtures/cpix/ClearContentKeysOnly.xml");
const ROTATION: &str =
    include_str!("../../tests/fixtures/cpix/KeyRotationMultiKeySinglePeriod.xml");
const RULES: &str = include_str!("../../tests/fixtures/cpix/UsageRulesBasedOnLabels.xml");
const EMPTY: &str = include_str!("../../tests/fixtures/cpix/EmptyDocument.xml");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-keys-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn key(kid: &str, b64: &str) -> ContentKey {
    ContentKey {
        kid: kid.parse().expect("kid"),
        key: STANDARD.decode(b64).expect("b64").try_into().expect("16"),
    }
}

#[test]
fn cpix_clear_keys_import_exactly() {
    let keys = parse_cpix(CLEAR).expect("clear keys");
    assert_eq!(
        keys,
        vec![
            key(
                "40d02dd1-61a3-4787-a155-572325d47b80",
                "gPxt0PMwrHM4TdjwdQmhhQ=="
            ),
            key(
                "0a30ea4f-539d-4b02-94b2-2b3fba2576d3",
                "x/gaoS/fDi8BqGNIhkixwQ=="
            ),
            key(
                "9f7908fa-5d5c-4097-ba53-50edc2235fbc",
                "3iv9lYwafpe0uEmxDc6PSw=="
            ),
            key(
                "fac2cbf5-889c-412b-a385-04a29d409bdc",
                "1OZVZZoYFSU2X/7qT3sHwg=="
            ),
        ]
    );
}

#[test]
fn cpix_with_periods_and_usage_rules_imports_its_keys() {
    let keys = parse_cpix(ROTATION).expect("rotation");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].kid.uuid(), "7ce7f10d-a91b-41b9-b331-7999fd1abf4c");
    assert!(parse_cpix(RULES).expect("rules").len() >= 2);
}

#[test]
fn empty_corrupt_and_foreign_documents_are_refused_cleanly() {
    let err = parse_cpix(EMPTY).expect_err("empty");
    assert!(err.to_string().contains("no content keys"), "{err}");
    assert!(parse_cpix(&CLEAR[..CLEAR.len() / 2]).is_err());
    assert!(parse_cpix("<html/>").is_err());
    assert!(parse_cpix("").is_err());
    let short = CLEAR.replace("gPxt0PMwrHM4TdjwdQmhhQ==", "gPxt0PMw");
    assert!(parse_cpix(&short)
        .expect_err("short key")
        .to_string()
        .contains("16 bytes"));
}

#[test]
fn cpix_export_round_trips() {
    let keys = parse_cpix(CLEAR).expect("clear");
    assert_eq!(parse_cpix(&write_cpix(&keys)).expect("export parses"), keys);
}

fn on_disk(dir: &Path, rotate_every: u64) -> KeysConfig {
    KeysConfig {
        state_dir: Some(dir.to_owned()),
        rotate_every,
        ..KeysConfig::default()
    }
}

/// `channel`'s key file is mode 0600 and no temporary file is left over.
fn assert_private_file(dir: &Path, channel: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("keys/{channel}.json"));
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!dir.join(format!("keys/.{channel}.json.tmp")).exists());
}

#[test]
fn keys_survive_a_restart_with_private_files() {
    let dir = temp_dir("restart");
    let config = on_disk(&dir, 0);
    let first = KeyService::open(&config).expect("open");
    let key = first.key_for("premium", None).expect("key");
    assert_eq!(first.key_for("premium", None).expect("again"), key);
    drop(first);
    let second = KeyService::open(&config).expect("reopen");
    assert_eq!(second.key_for("premium", None).expect("after restart"), key);
    assert_eq!(second.lookup(&key.kid), Some(key));
    assert_private_file(&dir, "premium");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn import_only_into_a_channel_without_keys() {
    let service = KeyService::open(&KeysConfig::default()).expect("memory");
    let kids = service.import_cpix("movie", CLEAR).expect("import");
    assert_eq!(kids.len(), 4);
    assert_eq!(service.key_for("movie", None).expect("first").kid, kids[0]);
    assert!(matches!(
        service.import_cpix("movie", CLEAR),
        Err(KeyError::InUse(_))
    ));
    service.key_for("live", None).expect("generated");
    assert!(service.import_cpix("live", CLEAR).is_err());
    assert!(service.import_cpix("../etc", CLEAR).is_err());
}

#[test]
fn rotation_gives_each_period_its_own_key() {
    let service = KeyService::open(&KeysConfig {
        state_dir: None,
        rotate_every: 10,
        ..KeysConfig::default()
    })
    .expect("memory");
    assert_eq!(service.period_of(1_700_000_019), Some(170_000_001));
    let a = service.key_for("c", Some(1)).expect("a");
    let b = service.key_for("c", Some(2)).expect("b");
    assert_ne!(a.kid, b.kid);
    assert_eq!(service.key_for("c", Some(1)).expect("a again"), a);
}

#[test]
fn key_ids_parse_in_every_form_and_keys_stay_out_of_debug() {
    let kid: KeyId = "40d02dd1-61a3-4787-a155-572325d47b80"
        .parse()
        .expect("uuid");
    assert_eq!(
        kid,
        "40d02dd161a34787a155572325d47b80".parse().expect("hex")
    );
    assert_eq!(KeyId::from_base64url(&kid.base64url()), Some(kid));
    assert!("xyz".parse::<KeyId>().is_err());
    let key = ContentKey::generate().expect("random");
    assert!(!format!("{key:?}").contains(&hex::encode(key.key)));
}

#[test]
fn group_and_period_keys_survive_a_restart_and_export_with_usage_rules() {
    let dir = temp_dir("groups");
    let config = on_disk(&dir, 1);
    let first = KeyService::open(&config).expect("open");
    let hd7 = first.group_key("tv", Some("hd"), Some(7)).expect("hd 7");
    let hd8 = first.group_key("tv", Some("hd"), Some(8)).expect("hd 8");
    let audio7 = first
        .group_key("tv", Some("audio"), Some(7))
        .expect("audio 7");
    let own7 = first.key_for("tv", Some(7)).expect("own 7");
    let distinct: std::collections::BTreeSet<KeyId> =
        [hd7, hd8, audio7, own7].iter().map(|k| k.kid).collect();
    assert_eq!(distinct.len(), 4, "a key per group and period");
    // The default key is the group's first period key, asked for any period.
    assert_eq!(
        first
            .default_key("tv", Some("hd"), Some(99))
            .expect("default"),
        hd7
    );
    // A group that has none yet gets the asked-for period's key.
    let sd = first.default_key("tv", Some("sd"), Some(9)).expect("sd");
    assert_eq!(
        first.group_key("tv", Some("sd"), Some(9)).expect("sd 9"),
        sd
    );
    assert!(first.group_key("tv", Some("../x"), Some(1)).is_err());
    drop(first);

    let second = KeyService::open(&config).expect("reopen");
    assert_eq!(
        second.group_key("tv", Some("hd"), Some(7)).expect("hd 7"),
        hd7
    );
    assert_eq!(
        second.group_key("tv", Some("hd"), Some(8)).expect("hd 8"),
        hd8
    );
    assert_eq!(
        second.group_key("tv", Some("audio"), Some(7)).expect("a"),
        audio7
    );
    assert_eq!(second.key_for("tv", Some(7)).expect("own"), own7);
    assert_eq!(
        second.default_key("tv", Some("hd"), Some(1)).expect("d"),
        hd7
    );
    assert_eq!(second.lookup(&hd8.kid), Some(hd8));
    assert_eq!(second.channel_of(&audio7.kid).as_deref(), Some("tv"));
    assert_eq!(second.entries_of("tv").len(), 5);

    let cpix = write_cpix_entries(&second.entries_of("tv"));
    assert_eq!(parse_cpix(&cpix).expect("parses back").len(), 5);
    let doc = roxmltree::Document::parse(&cpix).expect("xml");
    let rule = |kid: &KeyId| {
        doc.descendants()
            .find(|n| {
                n.has_tag_name((CPIX_NS, "ContentKeyUsageRule"))
                    && n.attribute("kid") == Some(kid.uuid().as_str())
            })
            .expect("a rule per key")
    };
    let filters = |kid: &KeyId| -> Vec<String> {
        rule(kid)
            .children()
            .filter(|n| n.is_element())
            .map(|n| {
                let attrs: Vec<String> = n.attributes().map(|a| a.value().to_owned()).collect();
                format!("{}{:?}", n.tag_name().name(), attrs)
            })
            .collect()
    };
    assert_eq!(
        filters(&hd8.kid),
        [
            "KeyPeriodFilter[\"keyPeriod_8\"]",
            "LabelFilter[\"hd\"]",
            "VideoFilter[]"
        ]
    );
    assert_eq!(
        filters(&audio7.kid),
        ["KeyPeriodFilter[\"keyPeriod_7\"]", "AudioFilter[]"]
    );
    assert_eq!(
        rule(&audio7.kid).attribute("intendedTrackType"),
        Some("AUDIO")
    );
    assert_eq!(
        filters(&own7.kid),
        ["KeyPeriodFilter[\"keyPeriod_7\"]", "VideoFilter[]"]
    );
    let periods: Vec<(&str, &str)> = doc
        .descendants()
        .filter(|n| n.has_tag_name((CPIX_NS, "ContentKeyPeriod")))
        .filter_map(|n| Some((n.attribute("id")?, n.attribute("index")?)))
        .collect();
    assert_eq!(
        periods,
        [
            ("keyPeriod_7", "7"),
            ("keyPeriod_8", "8"),
            ("keyPeriod_9", "9")
        ]
    );
    // A channel with one key exports no rules at all.
    assert!(!write_cpix(&[hd7]).contains("UsageRule"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pruning_keeps_the_window_and_default_keys_across_a_restart() {
    let dir = temp_dir("prune");
    let config = on_disk(&dir, 1);
    let first = KeyService::open(&config).expect("open");
    let default_hd = first
        .default_key("news", Some("hd"), Some(100))
        .expect("default");
    for p in 100..200 {
        for group in [None, Some("hd")] {
            first.group_key("news", group, Some(p)).expect("key");
        }
    }
    let other = first.group_key("sport", None, Some(100)).expect("sport");
    let old = first.group_key("news", None, Some(150)).expect("old");
    let window: Vec<(Option<&str>, u64, ContentKey)> = (190..200)
        .flat_map(|p| [None, Some("hd")].map(|g| (g, p)))
        .map(|(g, p)| (g, p, first.group_key("news", g, Some(p)).expect("key")))
        .collect();
    let default_own = first.default_key("news", None, Some(190)).expect("default");

    // Periods 101..190 of both groups go; each group's first key stays.
    assert_eq!(first.prune("news", 190).expect("prune"), 2 * 89);
    assert_eq!(
        first.prune("news", 190).expect("again"),
        0,
        "nothing left to prune"
    );
    assert_eq!(first.entries_of("news").len(), 2 * 11);
    assert_eq!(first.lookup(&old.kid), None, "a pruned key is unknown");
    assert_eq!(first.existing_key("news", None, 150), None);
    assert_eq!(
        first.lookup(&other.kid),
        Some(other),
        "other channels keep theirs"
    );
    drop(first);

    let second = KeyService::open(&config).expect("reopen");
    for (group, period, key) in &window {
        assert_eq!(
            second
                .group_key("news", *group, Some(*period))
                .expect("window key"),
            *key,
            "{group:?} period {period} changed across the restart"
        );
        assert_eq!(second.lookup(&key.kid), Some(*key));
    }
    assert_eq!(
        second
            .default_key("news", Some("hd"), Some(199))
            .expect("hd default"),
        default_hd
    );
    assert_eq!(
        second
            .default_key("news", None, Some(199))
            .expect("default"),
        default_own
    );
    assert_eq!(second.lookup(&old.kid), None);
    assert_eq!(second.entries_of("news").len(), 2 * 11);
    assert_private_file(&dir, "news");
    // An unknown channel has nothing to prune.
    assert_eq!(second.prune("nobody", 10).expect("nothing"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

const SECRET: &str = "redundant-origins-share-this-secret-0123456789";

fn derived(dir: &Path, rotate_every: u64) -> KeysConfig {
    KeysConfig {
        key_secret: Some(KeySecret::new(SECRET).expect("secret")),
        ..on_disk(dir, rotate_every)
    }
}

#[test]
fn two_origins_with_one_secret_hold_the_same_keys_without_sharing_a_disk() {
    let (da, db) = (temp_dir("derived-a"), temp_dir("derived-b"));
    let a = KeyService::open(&derived(&da, 0)).expect("a");
    let b = KeyService::open(&derived(&db, 0)).expect("b");
    assert_eq!(a.key_for("news", None).ok(), b.key_for("news", None).ok());
    assert_eq!(
        a.group_key("news", Some("hd"), None).ok(),
        b.group_key("news", Some("hd"), None).ok()
    );
    assert_ne!(
        a.key_for("news", None).ok(),
        a.key_for("sport", None).ok(),
        "each channel its own key"
    );
    // Each origin persisted what it created, and still holds it after a
    // restart; B can answer a licence request for a key A handed out.
    let kid = a.key_for("news", None).expect("key").kid;
    drop(b);
    let b = KeyService::open(&derived(&db, 0)).expect("b again");
    assert_eq!(b.lookup(&kid), a.lookup(&kid));
    assert_private_file(&db, "news");
    for d in [da, db] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// An origin whose keys rotate every 10 segments, derived from [`SECRET`].
fn rotating_derived() -> KeyService {
    KeyService::open(&KeysConfig {
        rotate_every: 10,
        key_secret: Some(KeySecret::new(SECRET).expect("secret")),
        ..KeysConfig::default()
    })
    .expect("keys")
}

#[test]
fn derived_rotation_gives_each_group_and_period_the_same_key_on_both_origins() {
    let (a, b) = (rotating_derived(), rotating_derived());
    // B is asked in another order, for periods A never saw first.
    let from_b: Vec<_> = [(Some("audio"), 9), (None, 8), (None, 7)]
        .iter()
        .map(|(g, p)| b.group_key("c", *g, Some(*p)).expect("b key"))
        .collect();
    let from_a: Vec<_> = [(Some("audio"), 9), (None, 8), (None, 7)]
        .iter()
        .map(|(g, p)| a.group_key("c", *g, Some(*p)).expect("a key"))
        .collect();
    assert_eq!(from_a, from_b);
    assert_ne!(from_a[1], from_a[2], "a new key each period");
    // Random keys stay the default without a secret.
    let random = KeyService::open(&KeysConfig::default()).expect("random");
    assert_ne!(random.key_for("c", Some(7)).ok(), Some(from_a[2]));
}

#[test]
fn cpix_import_and_export_keep_working_with_a_secret() {
    let service = KeyService::open(&KeysConfig {
        key_secret: Some(KeySecret::new(SECRET).expect("secret")),
        ..KeysConfig::default()
    })
    .expect("memory");
    let kids = service.import_cpix("movie", CLEAR).expect("import");
    assert_eq!(
        service.key_for("movie", None).expect("imported").kid,
        kids[0]
    );
    let live = service.key_for("live", None).expect("derived");
    let exported = parse_cpix(&write_cpix(&service.keys_of("live"))).expect("export");
    assert_eq!(exported, vec![live]);
}

#[test]
fn the_secret_stays_out_of_config_dumps() {
    let config: KeysConfig =
        toml::from_str(&format!("key_secret = \"{SECRET}\"\n")).expect("parses");
    assert!(config.key_secret.is_some());
    assert!(!format!("{config:?}").contains(SECRET));
    assert!(!toml::to_string(&config).expect("toml").contains(SECRET));
    let short: Result<KeysConfig, _> = toml::from_str("key_secret = \"1234\"\n");
    let e = short.expect_err("short secret").to_string();
    assert!(e.contains("key_secret"), "{e}");
}

#[test]
fn derived_default_keys_do_not_depend_on_what_was_created_first() {
    let (a, b) = (rotating_derived(), rotating_derived());
    // A rendered a segment of period 12 before the init (period 10); B
    // the init first.
    a.group_key("c", Some("hd"), Some(12)).expect("segment key");
    let from_a = a.default_key("c", Some("hd"), Some(10)).expect("a");
    let from_b = b.default_key("c", Some("hd"), Some(10)).expect("b");
    assert_eq!(from_a, from_b, "one init segment on both origins");
}
