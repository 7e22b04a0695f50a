//! The test images of `crates/vision/tests/data` and the small two-label dataset made of them
//! (`two-labels.txt`, which the SAM tests in `tests/` read too), shared by the test binaries
//! of every crate through `#[path]`.

// Each test binary including this file uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;

/// The folder of test images, from any crate under `crates/`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vision/tests/data")
}

/// A file of the test images.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The two-label dataset: `(label, fixture)` pairs, in the file's order.
pub fn dataset_files() -> Vec<(String, String)> {
    let path = fixtures_dir().join("two-labels.txt");
    let list = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    list.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (label, name) = line
                .split_once('/')
                .unwrap_or_else(|| panic!("{line:?} in {} is not <label>/<file>", path.display()));
            (label.to_owned(), name.to_owned())
        })
        .collect()
}

/// Uploaded beside the dataset as `coffee/broken.jpg`: a JPEG header and nothing more.
pub const BROKEN_JPEG: &[u8] = b"\xff\xd8\xff\xe0 not really";

/// The dataset's objects under `datasets/<dataset>/`, the broken JPEG included: `(key, bytes)`.
pub fn dataset_objects(dataset: &str) -> Vec<(String, Vec<u8>)> {
    let mut objects: Vec<(String, Vec<u8>)> = dataset_files()
        .into_iter()
        .map(|(label, name)| (format!("datasets/{dataset}/{label}/{name}"), fixture(&name)))
        .collect();
    objects.push((
        format!("datasets/{dataset}/coffee/broken.jpg"),
        BROKEN_JPEG.to_vec(),
    ));
    objects
}
