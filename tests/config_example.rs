//! haproxy/idgate.toml is said to document every configuration key: this test fails when a key
//! exists that the example does not mention.
//!
//! The keys come from the parser itself, not from a list kept here: every section refuses
//! unknown keys, and serde's refusal names every key the section has ("unknown field `x`,
//! expected one of `a`, `b`..."). The test asks each section (top level, then each section and
//! table array it names) for its keys that way.

use idgate::config::Config;

/// The keys a section accepts, from the refusal of an unknown one. `header` opens the
/// section (e.g. `[spop]`, `[[rule]]`); `base` is what the section needs to parse at all.
fn keys_of(header: &str, base: &str) -> Vec<String> {
    let text = format!("{header}\n{base}zz_not_a_key = 1\n");
    let err = match Config::from_toml(&text, "probe") {
        Ok(_) => panic!("{header}: an unknown key was accepted"),
        Err(e) => e.to_string(),
    };
    let list = err
        .split("expected one of ")
        .nth(1)
        .or_else(|| err.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("{header}: no key list in {err:?}"));
    list.split(',')
        .map(|k| k.trim().trim_matches('`').trim().to_owned())
        .map(|k| k.split('`').next().unwrap_or("").to_owned())
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect()
}

/// Does the example mention `key` as a setting, set or commented out (`key =`, `# key =`)?
fn mentions(example: &str, key: &str) -> bool {
    example.lines().any(|l| {
        let l = l.trim_start().trim_start_matches('#').trim_start();
        l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

#[test]
fn the_example_mentions_every_key() {
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("haproxy/idgate.toml"),
    )
    .unwrap();
    let sections = keys_of("", "");
    assert!(
        sections.iter().any(|s| s == "spop") && sections.iter().any(|s| s == "rule"),
        "top-level keys not found: {sections:?}"
    );
    // What each section needs to get as far as its unknown key.
    let needs = |s: &str| -> (String, String) {
        match s {
            "issuer" => (
                "[[issuer]]".into(),
                "name = \"a\"\nissuer = \"https://a.example\"\naudiences = [\"x\"]\n".into(),
            ),
            "rule" => ("[[rule]]".into(), "name = \"r\"\n".into()),
            "upstream" => ("[upstream.u]".into(), "kind = \"static\"\n".into()),
            other => (format!("[{other}]"), String::new()),
        }
    };
    let mut missing = Vec::new();
    let mut checked = 0;
    for s in &sections {
        let (header, base) = needs(s);
        for key in keys_of(&header, &base) {
            checked += 1;
            if !mentions(&example, &key) {
                missing.push(format!("{s}.{key}"));
            }
        }
    }
    assert!(
        checked >= 40,
        "only {checked} keys found: the probe is broken"
    );
    assert!(
        missing.is_empty(),
        "haproxy/idgate.toml does not mention these keys (add them, commented, with their default): {missing:?}"
    );
}
