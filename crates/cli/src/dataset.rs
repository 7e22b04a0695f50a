//! Labelled image folders (`DIR/<label>/<image>`) as a feature-extraction source.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use vision::{DecodeLimits, LabeledImage, SourceFailure, SourceItem};

/// One image file of a dataset folder.
pub struct Entry {
    /// `<label>/<file name>`, as reported in skipped-file lists.
    pub key: String,
    pub label: String,
    pub path: PathBuf,
}

/// Lists `dir/<label>/<file>` in sorted order (so runs are reproducible), skipping hidden names.
pub fn scan(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for label_dir in sorted_children(dir)
        .with_context(|| format!("cannot read dataset folder {}", dir.display()))?
    {
        if !label_dir.is_dir() {
            continue;
        }
        let label = file_name(&label_dir);
        for path in sorted_children(&label_dir)? {
            if path.is_file() {
                entries.push(Entry {
                    key: format!("{label}/{}", file_name(&path)),
                    label: label.clone(),
                    path,
                });
            }
        }
    }
    if entries.is_empty() {
        bail!(
            "{} holds no images; expected <label>/<image> files, e.g. {0}/cat/1.jpg",
            dir.display()
        );
    }
    Ok(entries)
}

fn sorted_children(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if !file_name(&path).starts_with('.') {
            children.push(path);
        }
    }
    children.sort();
    Ok(children)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads each file lazily, so only the images in flight are in memory.
pub fn source(
    entries: Vec<Entry>,
    limits: DecodeLimits,
) -> impl Iterator<Item = SourceItem> + Send {
    entries.into_iter().map(move |entry| {
        let read = std::fs::metadata(&entry.path)
            .map_err(|e| e.to_string())
            .and_then(|meta| {
                limits
                    .check_encoded_len(meta.len())
                    .map_err(|e| e.to_string())
            })
            .and_then(|()| std::fs::read(&entry.path).map_err(|e| e.to_string()));
        match read {
            Ok(bytes) => Ok(LabeledImage {
                key: entry.key,
                label: entry.label,
                bytes,
            }),
            Err(reason) => Err(SourceFailure {
                key: entry.key,
                label: entry.label,
                reason,
            }),
        }
    })
}
