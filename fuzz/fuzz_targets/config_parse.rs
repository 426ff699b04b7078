//! The TOML configuration: parsing, validation and policy compilation on arbitrary text.
//!
//! `Config::from_toml` is `parse_unvalidated` + `validate`; they are called separately here
//! (as `idgate check-config` does) so that `Policy::compile` also sees configs that parse but
//! fail validation: compiling one must report problems, never panic.
#![no_main]

use idgate::config::Config;
use idgate::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::parse_unvalidated(text, "fuzz") {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.problems.is_empty());
            let _ = e.to_string();
            return;
        }
    };
    let problems = cfg.validate();
    match Policy::compile(&cfg) {
        Ok(p) => assert_eq!(p.rules().len(), cfg.rules.len()),
        Err(p) => assert!(!p.is_empty()),
    }
    if problems.is_empty() {
        // The one-call form agrees.
        assert!(Config::from_toml(text, "fuzz").is_ok());
    }
});
