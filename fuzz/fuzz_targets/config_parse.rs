//! The TOML configuration: parsing, validation and policy compilation on arbitrary text.
//! Body and invariants: `idgate_fuzz::config_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = idgate_fuzz::config_parse(data);
});
