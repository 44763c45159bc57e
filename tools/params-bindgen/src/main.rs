//! `cargo run -p params-bindgen`: rewrite src/kernels/params_bindings.rs from cuda/include/params.h.

fn main() {
    let out = params_bindgen::committed();
    match params_bindgen::generate(&params_bindgen::header()) {
        Ok(text) => {
            if let Err(e) = std::fs::write(&out, text) {
                eprintln!("params-bindgen: write {}: {e}", out.display());
                std::process::exit(1);
            }
            println!("params-bindgen: wrote {}", out.display());
        }
        Err(e) => {
            eprintln!("params-bindgen: {e}");
            std::process::exit(1);
        }
    }
}
