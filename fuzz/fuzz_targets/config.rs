//! Any text as the configuration file: loaded or refused with positioned
//! errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relance::pipeline::config::Config;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name.len() % 2 == 0).then(|| "0123456789abcdef-value".to_string());
    if let Err(errors) = Config::parse(text, Path::new("fuzz.toml"), &env) {
        assert!(!errors.to_string().is_empty());
    }
});
