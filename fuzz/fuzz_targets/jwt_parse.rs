//! The JWT structure / header / claims parser and the claim checks on arbitrary UTF-8.
//! Body and invariants: `idgate_fuzz::jwt_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = idgate_fuzz::jwt_parse(data);
});
