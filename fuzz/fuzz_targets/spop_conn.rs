//! Arbitrary bytes, in arbitrary chunkings, into the SPOP connection state machine, plus the
//! `authorize` mapping for every NOTIFY it yields. Body and invariants: `idgate_fuzz::spop_conn`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = idgate_fuzz::spop_conn(data);
});
