//! The committed src/kernels/params_bindings.rs is exactly what bindgen generates from
//! cuda/include/params.h now. Needs libclang (scripts/install-toolchain.sh installs it).

#[test]
fn committed_bindings_are_current() {
    let generated = params_bindgen::generate(&params_bindgen::header()).unwrap_or_else(|e| panic!("{e}"));
    let committed = std::fs::read_to_string(params_bindgen::committed()).unwrap_or_default();
    assert!(
        committed == generated,
        "src/kernels/params_bindings.rs is stale (cuda/include/params.h changed): refresh it with `{}`",
        params_bindgen::REFRESH
    );
}
