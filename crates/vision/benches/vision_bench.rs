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
use vision::{
    Backbone, DecodeLimits, ExtractOptions, FEATURE_LEN, FeatureSet, LabeledImage, Preprocessor,
    TrainConfig, decode, extract_features, train_head,
};

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
        let decode_only = median(runs, || {
            decode(bytes, &limits, pre.resize_short_side()).expect("decodes");
        });
        let pure_rust = median(runs, || jpeg_decoder_scaled(bytes, pre.resize_short_side()));
        println!(
            "decode {name:<12}            {:>8.2} ms   (libjpeg-turbo; jpeg-decoder at the same scale: {:.2} ms, {:.1}× slower)",
            ms(decode_only),
            ms(pure_rust),
            pure_rust.as_secs_f64() / decode_only.as_secs_f64()
        );
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
        backbone.infer_bytes(&large, &limits).expect("classifies");
    });
    println!("classify 12 MP JPEG end to end  {:>8.2} ms", ms(end_to_end));

    extraction_throughput(&backbone, &data);
    head_training();

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

/// Images per second through decode → preprocess → backbone, with 1 and 2 workers.
fn extraction_throughput(backbone: &Backbone, data: &Path) {
    let photos: Vec<Vec<u8>> = ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"]
        .iter()
        .map(|name| std::fs::read(data.join(name)).expect("fixture"))
        .collect();
    let items = || {
        (0..120).map(|i| {
            Ok(LabeledImage {
                key: format!("{i}"),
                label: format!("{}", i % 3),
                bytes: photos[i % 3].clone(),
            })
        })
    };
    let mut single = 0.0;
    for workers in [1, 2] {
        let options = ExtractOptions {
            workers,
            ..ExtractOptions::default()
        };
        let start = Instant::now();
        let set = extract_features(backbone, items(), &options, |_| {}).expect("extracts");
        let rate = set.len() as f64 / start.elapsed().as_secs_f64();
        if workers == 1 {
            single = rate;
        }
        println!(
            "extraction, {workers} worker(s)      {rate:>8.1} images/s ({:.2}× one worker; small photos)",
            rate / single
        );
    }
}

/// Head training on 10,000 × 1280 synthetic features, 10 classes: the default penalty search
/// (7 penalties × 5 folds), the final fit and the refit.
fn head_training() {
    let mut set = FeatureSet::default();
    let mut state = 0x853c_49e6_748f_ea9bu64;
    let mut row = vec![0.0f32; FEATURE_LEN];
    for i in 0..10_000 {
        let class = i % 10;
        for (d, value) in row.iter_mut().enumerate() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            *value = if d % 10 == class { 1.0 } else { 0.0 } + 4.0 * noise;
        }
        set.push(format!("{i}"), format!("class-{class}"), &row);
    }
    let start = Instant::now();
    let trained = train_head(&set, &TrainConfig::default(), |_| {}).expect("trains");
    let iterations: usize = trained.penalty_scores.iter().map(|s| s.iterations).sum();
    println!(
        "head training 10k×1280, 10 classes, {} L-BFGS iterations {:>8.2} s",
        iterations + trained.solver.iterations,
        start.elapsed().as_secs_f64()
    );
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

/// The decoder before libjpeg-turbo, and still the fallback: jpeg-decoder at the same DCT scale.
fn jpeg_decoder_scaled(bytes: &[u8], short_side: u32) {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().expect("a JPEG");
    let info = decoder.info().expect("read");
    let wanted = u16::try_from(short_side).expect("small");
    let request = if info.width <= info.height {
        (wanted, u16::MAX)
    } else {
        (u16::MAX, wanted)
    };
    decoder.scale(request.0, request.1).expect("scales");
    std::hint::black_box(decoder.decode().expect("decodes"));
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
