//! Serving request bodies: strict JSON, input formats.
//! Body and invariants: `idgate_fuzz::payload_check`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = idgate_fuzz::payload_check(data);
});
