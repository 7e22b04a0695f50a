//! Head training time and memory as the dataset grows, on features that are as hard to fit as
//! real ones: `n` rows drawn (seeded) from a pool of real MobileNetV2 features, e.g. the MNIST
//! pool `bench/head_vs_sklearn.py` exports with `lambda-vision features`, each with a little
//! noise so no two rows are the same. Prints one JSON object per size; asserts nothing.
//!
//! ```text
//! cargo run -p lambda-vision-bench --bin head_scale -- \
//!     --pool target/head-bench/mnist/pool.npy --sizes 20000,100000
//! ```
//!
//! The rows repeat 3,000 images, so the accuracy they give means nothing; the solver's work
//! (iterations on a real feature distribution) and the time and memory it takes are the point.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use vision::{FEATURE_LEN, FeatureSet, TrainConfig, train_head};

#[derive(Parser)]
struct Args {
    /// A `lambda-vision features` output: float32 N×1280 `.npy` with its `.json` sidecar.
    #[arg(long)]
    pool: PathBuf,
    /// Dataset sizes to train on, in rows.
    #[arg(long, value_delimiter = ',', default_values_t = [20_000usize, 100_000])]
    sizes: Vec<usize>,
    /// Noise added to each drawn row, as a fraction of each feature's spread in the pool.
    #[arg(long, default_value_t = 0.3)]
    jitter: f32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (pool, labels) = read_pool(&args.pool)?;
    let rows = labels.len();
    if rows == 0 {
        bail!("{} holds no rows", args.pool.display());
    }
    let spread = feature_spread(&pool, rows);
    for &n in &args.sizes {
        // Each size's own peak: the kernel's high-water mark starts again from here.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let mut set = FeatureSet::default();
        set.features.reserve_exact(n * FEATURE_LEN);
        let mut random = SplitMix(n as u64);
        let mut row = vec![0.0f32; FEATURE_LEN];
        for i in 0..n {
            let source = (random.next() % rows as u64) as usize;
            let original = &pool[source * FEATURE_LEN..(source + 1) * FEATURE_LEN];
            for ((out, x), s) in row.iter_mut().zip(original).zip(&spread) {
                *out = (x + args.jitter * s * random.centred()).max(0.0);
            }
            set.push(format!("row-{i}"), labels[source].clone(), &row);
        }
        let started = Instant::now();
        let trained = train_head(&set, &TrainConfig::default(), |_| {})?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "rows": n,
                "head_training_s": seconds,
                "chosen_penalty": trained.chosen.penalty,
                "search_iterations": trained.penalty_scores.iter().map(|s| s.iterations).sum::<usize>(),
                "final_fit_iterations": trained.solver.iterations,
                "converged": trained.solver.converged,
                "features_mib": (n * FEATURE_LEN * 4) as f64 / 1048576.0,
                "peak_rss_mib": peak_rss_mib(),
            })
        );
    }
    Ok(())
}

/// The pool's rows (row-major) and each row's label.
fn read_pool(path: &Path) -> Result<(Vec<f32>, Vec<String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // Version 1.0 only, as numpy writes these: magic, version, u16 header length, header.
    if !bytes.starts_with(b"\x93NUMPY\x01\x00") || bytes.len() < 10 {
        bail!("{} is not a version 1.0 .npy file", path.display());
    }
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = bytes
        .get(10..10 + header_len)
        .map(String::from_utf8_lossy)
        .context("the .npy header is cut short")?;
    if !header.contains("'<f4'")
        || !header.contains("'fortran_order': False")
        || !header.contains(&format!(", {FEATURE_LEN})"))
    {
        bail!(
            "{} is not row-major float32 N×{FEATURE_LEN}: {header}",
            path.display()
        );
    }
    let pool: Vec<f32> = bytes[10 + header_len..]
        .as_chunks::<4>()
        .0
        .iter()
        .map(|b| f32::from_le_bytes(*b))
        .collect();
    let sidecar = path.with_extension("json");
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&sidecar).with_context(|| format!("reading {}", sidecar.display()))?,
    )?;
    let names: Vec<&str> = meta["labels"]
        .as_array()
        .context("no labels in the sidecar")?
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    let labels = meta["targets"]
        .as_array()
        .context("no targets in the sidecar")?
        .iter()
        .map(|t| {
            t.as_u64()
                .and_then(|t| names.get(t as usize))
                .map(|name| (*name).to_owned())
                .context("a target that names no label")
        })
        .collect::<Result<Vec<String>>>()?;
    if labels.len() * FEATURE_LEN != pool.len() {
        bail!(
            "{} rows of features, {} targets",
            pool.len() / FEATURE_LEN,
            labels.len()
        );
    }
    Ok((pool, labels))
}

/// Each feature's standard deviation over the pool.
fn feature_spread(pool: &[f32], rows: usize) -> Vec<f32> {
    (0..FEATURE_LEN)
        .map(|c| {
            let column = || {
                pool.iter()
                    .skip(c)
                    .step_by(FEATURE_LEN)
                    .map(|&x| f64::from(x))
            };
            let mean = column().sum::<f64>() / rows as f64;
            let variance = column().map(|x| (x - mean).powi(2)).sum::<f64>() / rows as f64;
            variance.sqrt() as f32
        })
        .collect()
}

/// The process's peak resident memory (`VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// SplitMix64: a seeded stream of draws, enough for picking rows and noise (written by hand:
/// ten lines, and this crate needs nothing else from a random-number crate).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-0.5, 0.5).
    fn centred(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}
