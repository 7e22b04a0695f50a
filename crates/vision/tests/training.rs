//! Training end to end on real photos with the real backbone: extraction, the head, the
//! exported standalone ONNX classifier and the bundle's backbone check.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use image::{DynamicImage, ImageFormat};
use tract_onnx::prelude::*;
use vision::{
    BUNDLED_MODEL, Backbone, Classifier, ExtractOptions, FeatureSet, HeadDocument, LabeledImage,
    SourceFailure, SourceItem, TrainConfig, extract_features, train_bundle,
};

fn backbone() -> &'static Arc<Backbone> {
    static BACKBONE: OnceLock<Arc<Backbone>> = OnceLock::new();
    BACKBONE.get_or_init(|| Arc::new(Backbone::bundled().unwrap()))
}

fn photo(name: &str) -> DynamicImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    image::open(path).unwrap()
}

fn png(image: &DynamicImage) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    bytes.into_inner()
}

/// Eight crops and flips of each photo, one label per photo, plus bad items.
fn small_dataset() -> Vec<SourceItem> {
    let mut items = Vec::new();
    for (label, name) in [
        ("cat", "chelsea.jpg"),
        ("coffee", "coffee.jpg"),
        ("astronaut", "astronaut.jpg"),
    ] {
        let image = photo(name);
        let (w, h) = (image.width(), image.height());
        for i in 0..8u32 {
            let crop = image.crop_imm(i * w / 40, (i % 3) * h / 30, w - w / 5, h - h / 6);
            let variant = if i % 2 == 0 { crop } else { crop.fliph() };
            items.push(Ok(LabeledImage {
                key: format!("{label}/{i}.png"),
                label: label.into(),
                bytes: png(&variant),
            }));
        }
    }
    items.insert(
        3,
        Ok(LabeledImage {
            key: "cat/broken.jpg".into(),
            label: "cat".into(),
            bytes: b"\xff\xd8\xff garbage".to_vec(),
        }),
    );
    items.insert(
        7,
        Err(SourceFailure {
            key: "coffee/gone.jpg".into(),
            label: "coffee".into(),
            reason: "404".into(),
        }),
    );
    items
}

fn extract(workers: usize) -> FeatureSet {
    let mut calls = 0;
    let items = small_dataset();
    let total = items.len();
    let options = ExtractOptions {
        workers,
        total: Some(total),
        ..ExtractOptions::default()
    };
    let set = extract_features(backbone(), items, &options, |p| {
        calls += 1;
        assert_eq!(p.done, calls);
        assert_eq!(p.total, Some(total));
    })
    .unwrap();
    assert_eq!(calls, total, "progress after every image");
    set
}

#[test]
fn extraction_skips_bad_images_and_keeps_source_order_on_any_worker_count() {
    let parallel = extract(2);
    assert_eq!(parallel.len(), 24);
    let kinds: Vec<(&str, &str)> = parallel
        .skipped
        .iter()
        .map(|s| (s.key.as_str(), s.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("cat/broken.jpg", "corrupt"), ("coffee/gone.jpg", "fetch")]
    );
    assert_eq!(parallel.keys[0], "cat/0.png");
    assert_eq!(parallel.keys[23], "astronaut/7.png");
    let serial = extract(1);
    assert_eq!(parallel.keys, serial.keys);
    assert_eq!(
        parallel.features, serial.features,
        "bit-identical whatever the worker count"
    );
}

#[test]
fn bundle_trains_exports_and_reloads() {
    let set = extract(2);
    let config = TrainConfig {
        validation_split: 0.25,
        ..TrainConfig::default()
    };
    let bundle = train_bundle(backbone(), BUNDLED_MODEL, &set, &config, 1.0, |_| {}).unwrap();
    assert_eq!(bundle.head.labels, ["astronaut", "cat", "coffee"]);
    assert_eq!(bundle.metrics.images.validation, 6);
    assert_eq!(bundle.metrics.images.skipped, 2);
    assert!(
        bundle.metrics.evaluation.accuracy >= 5.0 / 6.0,
        "{:?}",
        bundle.metrics.evaluation
    );

    // Same data and seed → the very same bytes.
    let again = train_bundle(backbone(), BUNDLED_MODEL, &set, &config, 1.0, |_| {}).unwrap();
    assert_eq!(bundle.head_json, again.head_json);
    assert_eq!(bundle.model_onnx, again.model_onnx);

    // The standalone ONNX agrees with backbone + head to 1e-5.
    let plan = tract_onnx::onnx()
        .model_for_read(&mut Cursor::new(&bundle.model_onnx))
        .unwrap()
        .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let image = photo("chelsea.jpg");
    let decoded = vision::decode(&png(&image), &Default::default(), 256).unwrap();
    let tensor = backbone().preprocessor().tensor(&decoded.pixels).unwrap();
    let two_step = vision::softmax(
        &bundle
            .head
            .logits(&backbone().infer(tensor.clone()).unwrap().features),
    );
    let input = Tensor::from_shape(&[1, 3, 224, 224], &tensor).unwrap();
    let output = plan.run(tvec!(input.into_tvalue())).unwrap();
    let standalone: Vec<f32> = output[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_eq!(standalone.len(), 3);
    for (a, b) in standalone.iter().zip(&two_step) {
        assert!(
            (a - b).abs() < 1e-5,
            "standalone {standalone:?} vs two-step {two_step:?}"
        );
    }
    assert!(
        bundle.model_onnx.len() < BUNDLED_MODEL.len() - 4_000_000,
        "ImageNet classifier dropped"
    );

    // head.json round-trips, and classification with it uses the trained labels.
    let document: HeadDocument = serde_json::from_slice(&bundle.head_json).unwrap();
    let head = document.head_for(backbone()).unwrap();
    assert_eq!(head, bundle.head);
    let classifier = Classifier::with_head(Arc::clone(backbone()), head);
    let result = classifier
        .classify(&png(&photo("coffee.jpg")), &Default::default(), 3)
        .unwrap();
    assert_eq!(result.top[0].label, "coffee");
    assert_eq!(result.top.len(), 3);
}

#[test]
fn a_head_from_another_backbone_is_refused() {
    let set = extract(2);
    let bundle = train_bundle(
        backbone(),
        BUNDLED_MODEL,
        &set,
        &TrainConfig::default(),
        0.0,
        |_| {},
    )
    .unwrap();
    let mut document: HeadDocument = serde_json::from_slice(&bundle.head_json).unwrap();
    document.backbone_sha256 = "0".repeat(64);
    match document.head_for(backbone()) {
        Err(vision::VisionError::BackboneMismatch { expected, actual }) => {
            assert_eq!(expected, "0".repeat(64));
            assert_eq!(actual, backbone().sha256());
        }
        other => panic!("{other:?}"),
    }
}
