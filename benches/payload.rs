//! The payload checks of model-serving invocations (docs/payload.md): what they cost per KB of
//! body, and what they add to a serving decision.
//!
//! | group / case | what |
//! |---|---|
//! | `payload/check/{inputs,dataframe_split,messages}/{1,4,14}KB` | [`idgate::payload::check_json`] without a schema: strict JSON scanned (no `Value` built), input format; throughput in bytes, so criterion reports the cost per byte |
//! | `payload/schema/{1,4,14}KB` | the same with a JSON Schema (draft 2020-12) on `dataframe_split`: the body parsed into a `Value`, then validated |
//! | `payload/decision/{without,with}_checks` | `Engine::authorize` for a public serving rule with a 4 KB body, without and with `payload = "serving"` (decisions per second = 1 / time) |
//!
//! 14 KB is about the largest body HAProxy's default buffer lets through (docs/payload.md).
//! Run: `cargo bench --bench payload`.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use idgate::config::Config;
use idgate::decision::{Authorizer, AuthzRequest, Reason};
use idgate::engine::Engine;
use idgate::payload::{check_json, Schema};
use serde_json::json;

const SIZES: [usize; 3] = [1024, 4096, 14 * 1024];

/// A body of about `size` bytes in `format`.
fn body(format: &str, size: usize) -> Vec<u8> {
    let mut rows = Vec::new();
    let mut len = 0;
    let mut i = 0u32;
    while len < size {
        let row = match format {
            "inputs" => json!([f64::from(i) * 0.5, f64::from(i) + 1.25, i]),
            "dataframe_split" => json!([format!("user-{i}"), f64::from(i) * 1.5, i % 7 == 0]),
            _ => json!({"role": if i % 2 == 0 { "user" } else { "assistant" },
                        "content": format!("message number {i} about the weather")}),
        };
        len += row.to_string().len() + 1;
        rows.push(row);
        i += 1;
    }
    let v = match format {
        "inputs" => json!({"inputs": rows}),
        "dataframe_split" => {
            json!({"dataframe_split": {"columns": ["id", "x", "flag"], "data": rows}})
        }
        _ => json!({"messages": rows, "max_tokens": 64}),
    };
    v.to_string().into_bytes()
}

fn schema() -> Schema {
    Schema::compile(
        "bench",
        json!({"type": "object", "required": ["dataframe_split"], "properties": {
            "dataframe_split": {"type": "object", "required": ["data"], "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": {"type": "array", "items": {"type": "array", "prefixItems": [
                    {"type": "string"}, {"type": "number"}, {"type": "boolean"}
                ], "items": false}}
            }}
        }}),
    )
    .unwrap()
}

fn ready<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the benchmarked call did not complete on its first poll"),
    }
}

fn engine(payload: bool) -> Engine {
    let keys = if payload {
        "payload = \"serving\"\n"
    } else {
        ""
    };
    let text = format!(
        "[[rule]]\nname = \"serving\"\nmethods = [\"POST\"]\n\
         paths = [\"/serving-endpoints/*/invocations\"]\npublic = true\n{keys}"
    );
    Engine::new(
        Config::from_toml(&text, "bench").unwrap(),
        None,
        Engine::http_client(),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("payload/check");
    for format in ["inputs", "dataframe_split", "messages"] {
        for size in SIZES {
            let b = body(format, size);
            assert!(check_json(&b, None).is_ok(), "{format}");
            g.throughput(Throughput::Bytes(b.len() as u64));
            g.bench_function(format!("{format}/{}KB", size / 1024), |bench| {
                bench.iter(|| check_json(black_box(&b), None))
            });
        }
    }
    g.finish();

    let s = schema();
    let mut g = c.benchmark_group("payload/schema");
    for size in SIZES {
        let b = body("dataframe_split", size);
        assert!(check_json(&b, Some(&s)).is_ok());
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(format!("{}KB", size / 1024), |bench| {
            bench.iter(|| check_json(black_box(&b), Some(&s)))
        });
    }
    g.finish();

    let b = Bytes::from(body("inputs", 4096));
    let req = AuthzRequest {
        method: Some(ByteString::from_static("POST")),
        path: Some(ByteString::from_static(
            "/serving-endpoints/churn/invocations",
        )),
        body_size: Some(b.len() as u64),
        body: Some(b),
        content_type: Some(ByteString::from_static("application/json")),
        ..AuthzRequest::default()
    };
    let mut g = c.benchmark_group("payload/decision");
    for (name, payload) in [("without_checks", false), ("with_checks", true)] {
        let e = engine(payload);
        let v = ready(e.authorize(&req, Instant::now()));
        assert!(v.allow && v.reason == Reason::Public, "{v:?}");
        g.bench_function(name, |bench| {
            bench.iter(|| ready(e.authorize(black_box(&req), Instant::now())))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
