//! The head's unit tests, on synthetic clustered features.

use super::basis::RowBasis;
use super::design::standardisation;
use super::*;
use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Uniform noise around a per-class centre, from a seeded generator.
fn clustered(classes: usize, per_class: usize, spread: f32, seed: u64) -> FeatureSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut set = FeatureSet::default();
    for class in 0..classes {
        for i in 0..per_class {
            let row: Vec<f32> = (0..FEATURE_LEN)
                .map(|d| {
                    let centre = if d % classes == class { 2.0 } else { 0.0 };
                    centre + spread * (rng.random::<f32>() - 0.5)
                })
                .collect();
            set.push(format!("c{class}/{i}"), format!("class-{class}"), &row);
        }
    }
    set
}

fn bits(head: &Head) -> Vec<u32> {
    head.weights
        .iter()
        .flatten()
        .chain(&head.bias)
        .map(|v| v.to_bits())
        .collect()
}

fn small_grid() -> TrainConfig {
    TrainConfig {
        penalties: vec![1e-3, 1e-1, 10.0],
        ..TrainConfig::default()
    }
}

#[test]
fn same_seed_same_bits_on_any_number_of_threads() {
    let set = clustered(3, 40, 6.0, 1);
    let config = small_grid();
    let one = train_head_on(&set, &config, 1, |_| {}).unwrap();
    let two = train_head_on(&set, &config, 2, |_| {}).unwrap();
    let again = train_head_on(&set, &config, 3, |_| {}).unwrap();
    assert_eq!(bits(&one.head), bits(&two.head));
    assert_eq!(bits(&one.head), bits(&again.head));
    assert_eq!(one.penalty_scores, two.penalty_scores);
    let other = train_head_on(&set, &TrainConfig { seed: 7, ..config }, 2, |_| {}).unwrap();
    assert_ne!(bits(&one.head), bits(&other.head));
}

#[test]
fn learns_separable_classes_and_reports_every_penalty() {
    let set = clustered(4, 50, 3.0, 2);
    let mut reported = Vec::new();
    let trained = train_head(&set, &small_grid(), |s| reported.push(s.penalty)).unwrap();
    assert_eq!(reported, [10.0, 1e-1, 1e-3], "strongest first, each once");
    assert_eq!(trained.penalty_scores.len(), 3);
    let correct = trained
        .split
        .validation
        .iter()
        .filter(|&&row| trained.scored_head.predict(set.row(row)) == trained.targets[row])
        .count();
    assert_eq!(correct, trained.split.validation.len());
    assert!(trained.solver.converged);
    assert!(trained.chosen.cv_accuracy > 0.99);
}

/// Labels that have nothing to do with the features: any fit is overfitting, so
/// cross-validation must pick the strongest penalty (closest to predicting the class prior).
#[test]
fn noise_makes_the_strongest_penalty_win() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut set = FeatureSet::default();
    for i in 0..60 {
        let row: Vec<f32> = (0..FEATURE_LEN).map(|_| rng.random::<f32>()).collect();
        set.push(format!("{i}"), format!("class-{}", i % 3), &row);
    }
    let config = TrainConfig {
        penalties: vec![1e-4, 1e-2, 1.0, 30.0],
        ..TrainConfig::default()
    };
    let trained = train_head(&set, &config, |_| {}).unwrap();
    assert_eq!(trained.chosen.penalty, 30.0, "{:?}", trained.penalty_scores);
}

/// Tight, well-separated clusters: a weaker penalty gives more confident correct
/// predictions on held-out folds, so the weakest must win.
#[test]
fn clean_separable_data_makes_the_weakest_penalty_win() {
    let set = clustered(3, 30, 0.5, 12);
    let config = TrainConfig {
        penalties: vec![1e-3, 1e-1, 10.0],
        ..TrainConfig::default()
    };
    let trained = train_head(&set, &config, |_| {}).unwrap();
    assert_eq!(trained.chosen.penalty, 1e-3, "{:?}", trained.penalty_scores);
    let losses: Vec<f64> = trained
        .penalty_scores
        .iter()
        .map(|s| s.cv_log_loss)
        .collect();
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
}

#[test]
fn refit_with_validation_uses_every_image_but_the_same_penalty() {
    let set = clustered(3, 20, 8.0, 13);
    let refit = train_head(&set, &small_grid(), |_| {}).unwrap();
    assert_ne!(bits(&refit.head), bits(&refit.scored_head));
    let kept = train_head(
        &set,
        &TrainConfig {
            refit_with_validation: false,
            ..small_grid()
        },
        |_| {},
    )
    .unwrap();
    assert_eq!(bits(&kept.head), bits(&kept.scored_head));
    assert_eq!(bits(&kept.scored_head), bits(&refit.scored_head));
    assert_eq!(kept.chosen, refit.chosen);
}

/// More images than features skips the change of basis; fewer uses it. Both must land on
/// the same optimum of the same objective.
#[test]
fn the_basis_changes_nothing_but_the_cost() {
    let set = clustered(2, 12, 4.0, 14);
    let (_, targets) = label_targets(&set.labels);
    let rows: Vec<usize> = (0..set.len()).collect();
    let (mean, std) = standardisation(&set, &rows);
    let x = Array2::from_shape_fn((set.len(), FEATURE_LEN), |(r, c)| {
        (set.row(r)[c] - mean[c]) / std[c]
    });
    let direct = Problem::new(x.view(), &targets, 2)
        .fit(0.05, None, 2000)
        .unwrap();
    let basis = RowBasis::new(x.view());
    let reduced = Problem::new(basis.coordinates.view(), &targets, 2)
        .fit(0.05, None, 2000)
        .unwrap();
    let z = ArrayView2::from_shape((2, basis.rank()), &reduced.params[..2 * basis.rank()]).unwrap();
    let mapped = basis.to_features(z, x.view());
    for (a, b) in mapped.iter().zip(&direct.params[..2 * FEATURE_LEN]) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

/// Past the limit, cross-validation scores a stratified sample (so every score is a count
/// out of the sample's size), while the shipped head still learns from every image.
#[test]
fn the_search_samples_large_training_sets() {
    let set = clustered(3, 40, 8.0, 15);
    let config = TrainConfig {
        validation_split: 0.0,
        ..small_grid()
    };
    let limited = train_with_search_limit(&set, &config, 2, 60, |_| {}).unwrap();
    for score in &limited.penalty_scores {
        let correct = score.cv_accuracy * 60.0;
        assert!((correct - correct.round()).abs() < 1e-9, "{score:?}");
    }
    let full = train_with_search_limit(&set, &config, 2, 1000, |_| {}).unwrap();
    assert_ne!(limited.penalty_scores, full.penalty_scores);
    assert_eq!(limited.split.train.len(), 120);
    let again = train_with_search_limit(&set, &config, 1, 60, |_| {}).unwrap();
    assert_eq!(bits(&limited.head), bits(&again.head));
    let correct = (0..set.len())
        .filter(|&row| limited.head.predict(set.row(row)) == limited.targets[row])
        .count();
    assert!(correct >= 114, "{correct} of 120 training images");
}

#[test]
fn folds_are_stratified_balanced_and_seeded() {
    let targets: Vec<usize> = (0..53).map(|i| usize::from(i >= 40)).collect();
    let folds = stratified_folds(&targets, 2, 5, 3);
    for fold in 0..5 {
        let size = folds.iter().filter(|&&f| f == fold).count();
        assert!((10..=11).contains(&size), "fold {fold}: {size}");
        let minority = (0..53)
            .filter(|&i| folds[i] == fold && targets[i] == 1)
            .count();
        assert!((2..=3).contains(&minority), "fold {fold}: {minority}");
    }
    assert_eq!(folds, stratified_folds(&targets, 2, 5, 3));
    assert_ne!(folds, stratified_folds(&targets, 2, 5, 4));
}

#[test]
fn stratified_split_holds_out_each_class_in_proportion() {
    let targets: Vec<usize> = (0..100).map(|i| usize::from(i >= 80)).collect();
    let split = stratified_split(&targets, 2, 0.25, 9);
    let held = |class| {
        split
            .validation
            .iter()
            .filter(|&&r| targets[r] == class)
            .count()
    };
    assert_eq!((held(0), held(1)), (20, 5));
    assert_eq!(split.train.len() + split.validation.len(), 100);
    assert_eq!(split, stratified_split(&targets, 2, 0.25, 9));
    assert_ne!(split, stratified_split(&targets, 2, 0.25, 10));
}

#[test]
fn too_few_images_and_single_labels_are_refused() {
    let mut set = clustered(2, 10, 1.0, 4);
    set.push("c2/0".into(), "rare".into(), &vec![0.0; FEATURE_LEN]);
    match train_head(&set, &TrainConfig::default(), |_| {}) {
        Err(VisionError::TooFewImages {
            label,
            usable,
            minimum,
        }) => {
            assert_eq!((label.as_str(), usable, minimum), ("rare", 1, 5))
        }
        other => panic!("{other:?}"),
    }
    let one = clustered(1, 10, 1.0, 5);
    assert!(matches!(
        train_head(&one, &TrainConfig::default(), |_| {}),
        Err(VisionError::NotEnoughLabels { .. })
    ));
}

#[test]
fn config_errors_name_the_field() {
    let base = TrainConfig::default;
    for (config, field) in [
        (
            TrainConfig {
                penalties: vec![],
                ..base()
            },
            "penalties",
        ),
        (
            TrainConfig {
                penalties: vec![1e-3, f64::NAN],
                ..base()
            },
            "penalties",
        ),
        (
            TrainConfig {
                penalties: vec![0.0],
                ..base()
            },
            "penalties",
        ),
        (TrainConfig { folds: 1, ..base() }, "folds"),
        (
            TrainConfig {
                max_iterations: 5,
                ..base()
            },
            "max_iterations",
        ),
        (
            TrainConfig {
                validation_split: 0.9,
                ..base()
            },
            "validation_split",
        ),
    ] {
        match config.validate() {
            Err(VisionError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn folding_standardisation_changes_nothing() {
    let set = clustered(3, 20, 4.0, 6);
    let head = train_head(&set, &small_grid(), |_| {}).unwrap().head;
    let (weights, bias) = head.folded();
    let x = set.row(5);
    let direct = head.logits(x);
    for (class, expected) in direct.iter().enumerate() {
        let row = &weights[class * FEATURE_LEN..(class + 1) * FEATURE_LEN];
        let folded = bias[class] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>();
        assert!((folded - expected).abs() < 1e-3, "{folded} vs {expected}");
    }
}

/// With as many training images as features the final fits skip the basis and read the
/// features in place, standardising on the fly; they must land where a fit on a standardised
/// copy of the same rows lands.
#[test]
fn the_final_fits_on_the_features_in_place_match_a_standardised_copy() {
    let set = clustered(2, 800, 8.0, 16);
    let config = TrainConfig {
        penalties: vec![0.1],
        folds: 2,
        ..TrainConfig::default()
    };
    let trained = train_with_search_limit(&set, &config, 2, 200, |_| {}).unwrap();
    assert!(
        trained.split.train.len() >= FEATURE_LEN,
        "{}",
        trained.split.train.len()
    );
    let (mean, std) = standardisation(&set, &trained.split.train);
    let copy_of = |rows: &[usize]| {
        Array2::from_shape_fn((rows.len(), FEATURE_LEN), |(r, c)| {
            (set.row(rows[r])[c] - mean[c]) / std[c]
        })
    };
    let every: Vec<usize> = (0..set.len()).collect();
    for (head, rows) in [
        (&trained.scored_head, &trained.split.train),
        (&trained.head, &every),
    ] {
        let copy = copy_of(rows);
        let targets: Vec<usize> = rows.iter().map(|&r| trained.targets[r]).collect();
        let direct = Problem::new(copy.view(), &targets, 2)
            .fit(0.1, None, 2000)
            .unwrap();
        for (a, b) in head.weights.iter().flatten().zip(&direct.params) {
            assert!((f64::from(*a) - b).abs() < 5e-3, "{a} vs {b}");
        }
    }
    assert_ne!(bits(&trained.head), bits(&trained.scored_head));
}
