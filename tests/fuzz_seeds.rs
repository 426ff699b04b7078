//! Every fuzz target's seed corpus and saved crashers, through the very function the cargo-fuzz
//! binary calls (`fuzz/src/lib.rs`, included here), under plain `cargo test`: a crasher saved
//! in `fuzz/regressions/<target>/` fails CI on every run, not only when someone fuzzes. The
//! seeds are also checked to mean what their names say, so the corpus keeps reaching the code
//! it was written for.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use std::path::Path;

use idgate::decision::Reason;

/// `(file name, bytes)` of every input of `target`: seeds and regressions.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut v = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            v.push((name, std::fs::read(&p).unwrap()));
        }
    }
    v.sort();
    v
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    inputs(target)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("seed {target}/{name} missing"))
        .1
}

#[test]
fn spop_conn_inputs_run_cleanly_in_every_chunking() {
    let inputs = inputs("spop_conn");
    assert!(inputs.len() >= 10, "seed corpus missing");
    for (_, data) in inputs {
        // The mode byte's high bits pick the chunking; bit 0 (prepend a HELLO) is kept.
        for mode_bits in [0u8, 0x2a, 0xfe] {
            let mut d = data.clone();
            if let Some(m) = d.first_mut() {
                *m = (*m & 1) | mode_bits;
            }
            targets::spop_conn(&d);
        }
    }
}

#[test]
fn spop_conn_seeds_behave_as_named() {
    let run = |n: &str| {
        let r = targets::spop_conn(&seed("spop_conn", n));
        (r.notifies, r.closed, r.written)
    };
    assert_eq!(run("e1_healthcheck"), (0, true, vec![101]));
    assert_eq!(run("e2_e5_e6_e10"), (2, true, vec![101, 103, 103, 102]));
    let (n, _, written) = run("ready_authorize");
    assert_eq!((n, written), (2, vec![101, 103, 103]));
    let (_, closed, written) = run("ready_garbage");
    assert!(closed);
    assert_eq!(written, vec![101, 102]);
}

#[test]
fn jwt_parse_inputs_run_cleanly() {
    let inputs = inputs("jwt_parse");
    assert!(inputs.len() >= 10, "seed corpus missing");
    for (_, data) in inputs {
        targets::jwt_parse(&data);
    }
}

#[test]
fn jwt_parse_seeds_behave_as_named() {
    let run = |n: &str| targets::jwt_parse(&seed("jwt_parse", n)).expect("UTF-8 seed");
    assert_eq!(run("json_valid"), Ok(()));
    assert_eq!(run("json_alg_none"), Err(Reason::AlgNotAllowed));
    assert_eq!(run("json_hs256"), Err(Reason::AlgNotAllowed));
    assert_eq!(run("json_crit"), Err(Reason::ClaimInvalid));
    assert_eq!(run("json_jku"), Err(Reason::UnsupportedToken));
    assert_eq!(run("json_cty_jwt"), Err(Reason::UnsupportedToken));
    assert_eq!(run("json_dup_claim"), Err(Reason::ClaimInvalid));
    assert_eq!(run("json_nested_dup"), Err(Reason::ClaimInvalid));
    assert_eq!(run("jwe_5parts"), Err(Reason::UnsupportedToken));
    // `alg: none` is refused before the empty signature is looked at.
    assert_eq!(run("no_sig"), Err(Reason::AlgNotAllowed));
}

#[test]
fn config_parse_inputs_run_cleanly_and_shipped_configs_are_valid() {
    let inputs = inputs("config_parse");
    assert!(inputs.len() >= 4, "seed corpus missing");
    for (name, data) in inputs {
        let valid = targets::config_parse(&data);
        if name.ends_with(".toml") {
            assert_eq!(valid, Some(true), "seed {name} is a valid config");
        }
    }
}

/// Saved crashers: each must now be refused as a config problem, not panic.
#[test]
fn config_parse_regressions_are_config_problems() {
    assert_eq!(
        targets::config_parse(&seed("config_parse", "non_ascii_log_level")),
        Some(false)
    );
}

#[test]
fn path_match_inputs_run_cleanly() {
    let inputs = inputs("path_match");
    assert!(inputs.len() >= 10, "seed corpus missing");
    for (_, data) in inputs {
        targets::path_match(&data);
    }
}

#[test]
fn path_match_seeds_behave_as_named() {
    let run = |n: &str| targets::path_match(&seed("path_match", n));
    let rule = |n: &str| run(n).and_then(|(_, d)| d.1);
    assert_eq!(
        rule("secrets_deny"),
        Some((false, "deny-credentials".into()))
    );
    assert_eq!(rule("token_mgmt"), Some((false, "deny-credentials".into())));
    assert_eq!(rule("serving"), Some((true, "serving".into())));
    assert_eq!(run("health").map(|(_, d)| d.0), Some(Some("health".into())));
    // Refused before any rule: encoded slash, dot-segments, `;`.
    assert_eq!(run("encoded_slash"), None);
    assert_eq!(run("dot_encoded"), None);
    assert_eq!(run("semicolon"), None);
}

#[test]
fn payload_check_inputs_run_cleanly() {
    let inputs = inputs("payload_check");
    assert!(inputs.len() >= 8, "seed corpus missing");
    for (_, data) in inputs {
        let _ = targets::payload_check(&data);
    }
}

#[test]
fn payload_check_seeds_behave_as_named() {
    let run = |n: &str| targets::payload_check(&seed("payload_check", n));
    assert_eq!(run("dataframe_split_nan"), Ok("dataframe_split"));
    assert_eq!(run("dataframe_records"), Ok("dataframe_records"));
    assert_eq!(run("messages"), Ok("messages"));
    assert_eq!(run("prompt"), Ok("prompt"));
    assert_eq!(run("duplicate_key"), Err("inputs: duplicate key".into()));
    let err = |n: &str| run(n).unwrap_err();
    assert!(err("two_formats").contains("exactly one input field"));
    assert!(err("too_deep").contains("nested deeper than 64 levels"));
    assert!(err("trailing_comma").contains("not valid JSON"));
    // Python's json.loads accepts a lone surrogate escape; jiter does not (docs/payload.md).
    assert!(err("lone_surrogate").contains("not valid JSON"));
}
