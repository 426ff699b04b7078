//! Request-path normalization and rule matching on arbitrary strings.
//! Body and invariants: `idgate_fuzz::path_match`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = idgate_fuzz::path_match(data);
});
