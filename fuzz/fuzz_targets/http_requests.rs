//! The server's request handling (`modernbert serve`): arbitrary bytes as the JSON body of one of
//! its routes, driven in-process through the router over an engine on the small fixture. Every
//! answer must be a status the routes document, never 500 (a panic in a handler or the engine),
//! and every error must be a JSON object with an error message.
//! Input: 1 byte choosing the route, then the body.
#![no_main]

use std::sync::OnceLock;

use axum::body::{to_bytes, Body};
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use modernbert::engine::{DeviceChoice, Engine, EngineOptions};
use modernbert::serve::{router_for, ServeOptions};
use tower_service::Service;

const ROUTES: [&str; 6] = ["/embed", "/rerank", "/predict", "/tokenize", "/v1/embeddings", "/info"];

fuzz_target!(|data: &[u8]| {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    });
    let router = ROUTER.get_or_init(|| {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/st_mean_normalize_prompts"
        );
        let options = EngineOptions {
            device: DeviceChoice::Cpu,
            max_batch_tokens: 512,
            ..Default::default()
        };
        let engine = Engine::new(std::path::Path::new(dir), &options).expect("fixture engine");
        router_for(engine, ServeOptions::default())
    });
    let path = ROUTES[which as usize % ROUTES.len()];
    let method = if path == "/info" { Method::GET } else { Method::POST };
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    let (status, bytes) = runtime.block_on(async {
        let response = router.clone().call(request).await.expect("the router is infallible");
        let status = response.status().as_u16();
        (
            status,
            to_bytes(response.into_body(), usize::MAX).await.expect("a body"),
        )
    });
    assert!(
        [200, 400, 404, 405, 413, 415, 422, 424].contains(&status),
        "status {status} for {path}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if status != 200 && status != 405 {
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON error body");
        let message = v["error"].as_str().or_else(|| v["error"]["message"].as_str());
        assert!(message.is_some_and(|m| !m.is_empty()), "{path}: {v}");
    }
});
