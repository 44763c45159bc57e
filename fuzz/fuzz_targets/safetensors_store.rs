//! `TensorStore::open_files` on an arbitrary file (written to disk: the store mmaps it), then every
//! accessor on every tensor it lists: only `Err`s, never a panic or an out-of-bounds read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modernbert::weights::TensorStore;

fuzz_target!(|data: &[u8]| {
    let path = modernbert_fuzz::write_file(modernbert_fuzz::scratch_dir(), "model.safetensors", data);
    let store = TensorStore::open_files(&[path]);
    modernbert_fuzz::report("open_files", &store);
    let Ok(store) = store else { return };
    let names: Vec<String> = store.names().map(String::from).collect();
    for name in &names {
        assert!(store.contains(name));
        let shape = store.shape(name).expect("listed tensor has a shape").to_vec();
        let _ = store.storage_type(name);
        let _ = store.bytes(name);
        let values = store.f32(name, &shape);
        modernbert_fuzz::report(&format!("f32({name:?})"), &values);
        if let Ok(values) = values {
            // Validated header: the data length is exactly the shape's element count.
            assert_eq!(values.len(), shape.iter().product::<usize>());
        }
        // A wrong expected shape is an error, not a panic.
        let mut wrong = shape.clone();
        wrong.push(1);
        assert!(store.f32(name, &wrong).is_err());
    }
    assert!(store.f32("\u{0}not a tensor", &[1]).is_err());
});
