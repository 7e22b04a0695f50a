//! `cargo bench -p vision`: what one image costs, step by step, and how tract compares with
//! onnxruntime (1 thread) on the same model. Prints figures; asserts nothing.
//!
//! Set `LAMBDA_VISION_BENCH_PYTHON` to the Python with `bench/requirements.txt` installed
//! (default `python3`); the onnxruntime comparison is skipped when it is missing.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageFormat, RgbImage};
use vision::{Backbone, DecodeLimits, Preprocessor, decode};

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = repo.join("crates/vision/tests/data");
    let small = std::fs::read(data.join("chelsea.jpg")).expect("fixture");
    let large = twelve_megapixel_jpeg(&data.join("coffee.jpg"));
    let limits = DecodeLimits::default();
    let pre = Preprocessor::new(224).expect("224 is valid");

    println!("lambda-vision benchmark (medians; single thread)");
    println!(
        "inputs: chelsea.jpg 451×300 ({} KB), synthetic 4000×3000 JPEG q90 ({} KB)",
        small.len() / 1024,
        large.len() / 1024
    );

    for (name, bytes, runs) in [("small photo", &small, 200), ("12 MP JPEG", &large, 20)] {
        let ours = median(runs, || {
            let decoded = decode(bytes, &limits, pre.resize_short_side()).expect("decodes");
            pre.tensor(&decoded.pixels).expect("preprocesses");
        });
        let naive = median(runs.min(20), || naive_preprocess(bytes));
        println!(
            "decode+preprocess {name:<12} {:>8.2} ms   (naive image::load + imageops::resize: {:.2} ms, {:.1}× slower)",
            ms(ours),
            ms(naive),
            naive.as_secs_f64() / ours.as_secs_f64()
        );
    }

    let load = median(5, || {
        Backbone::bundled().expect("loads");
    });
    println!("model load (parse + optimise)   {:>8.2} ms", ms(load));

    let backbone = Backbone::bundled().expect("loads");
    let decoded = decode(&small, &limits, 256).expect("decodes");
    let tensor = pre.tensor(&decoded.pixels).expect("preprocesses");
    for _ in 0..10 {
        backbone.infer(tensor.clone()).expect("runs");
    }
    let tract = median(200, || {
        backbone.infer(tensor.clone()).expect("runs");
    });
    println!("backbone tract 1×3×224×224      {:>8.2} ms", ms(tract));

    let end_to_end = median(20, || {
        backbone.classify(&large, &limits, 5).expect("classifies");
    });
    println!("classify 12 MP JPEG end to end  {:>8.2} ms", ms(end_to_end));

    match onnxruntime_median_ms(&repo) {
        Some(ort) => println!(
            "backbone onnxruntime 1 thread   {ort:>8.2} ms   → tract / onnxruntime = {:.2}×",
            ms(tract) / ort
        ),
        None => println!(
            "backbone onnxruntime            skipped (pip install -r bench/requirements.txt)"
        ),
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(runs: usize, mut work: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// A 12 MP photo-like JPEG: a real photo upscaled, with sensor-like noise so it does not
/// compress (or decode) unrealistically fast.
fn twelve_megapixel_jpeg(source: &Path) -> Vec<u8> {
    let photo = image::open(source).expect("fixture").to_rgb8();
    let big = image::imageops::resize(&photo, 4000, 3000, image::imageops::FilterType::Triangle);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noisy = RgbImage::from_fn(4000, 3000, |x, y| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let p = big.get_pixel(x, y).0;
        let jitter = |v: u8, shift: u32| v.saturating_add(((state >> shift) & 7) as u8);
        image::Rgb([jitter(p[0], 0), jitter(p[1], 8), jitter(p[2], 16)])
    });
    let mut bytes = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(noisy)
        .write_to(&mut bytes, ImageFormat::Jpeg)
        .expect("encodes");
    bytes.into_inner()
}

/// What most code does: decode everything, resize the whole image, then crop.
fn naive_preprocess(bytes: &[u8]) {
    let image = image::load_from_memory(bytes).expect("decodes").to_rgb8();
    let (w, h) = image.dimensions();
    let (nw, nh) = if w <= h {
        (256, 256 * h / w)
    } else {
        (256 * w / h, 256)
    };
    let resized = image::imageops::resize(&image, nw, nh, image::imageops::FilterType::Triangle);
    let crop =
        image::imageops::crop_imm(&resized, (nw - 224) / 2, (nh - 224) / 2, 224, 224).to_image();
    std::hint::black_box(crop);
}

fn onnxruntime_median_ms(repo: &Path) -> Option<f64> {
    let python =
        std::env::var("LAMBDA_VISION_BENCH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(python)
        .arg(repo.join("bench/onnxruntime_backbone.py"))
        .arg(repo.join("models/mobilenetv2.onnx"))
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    line["median_ms"].as_f64()
}
