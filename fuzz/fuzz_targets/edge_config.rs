//! `strata check` and start-up on any file: a config or a `ConfigError`
//! naming what is wrong, never a panic (merge-then-validate and the policy's
//! token keys and geo rules included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::config::EdgeConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = EdgeConfig::from_toml(text) else {
        return;
    };
    if config.validate().is_ok() {
        let mut registry = prometheus_client::registry::Registry::default();
        let _ = config.policy(&mut registry);
    }
});
