//! The trainable part: multinomial logistic regression (a softmax layer) on frozen MobileNetV2
//! features, trained with mini-batch Adam, L2 weight decay and early stopping on validation loss.
//!
//! Written by hand because it is small (a few hundred lines) and must be bit-reproducible from a
//! seed: one thread, a fixed summation order and a seeded ChaCha shuffle.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::backbone::FEATURE_LEN;
use crate::error::{Result, VisionError};
use crate::extract::FeatureSet;

/// Training hyper-parameters; the defaults suit a few hundred to a few thousand images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Passes over the training split (1–1000, default 100); early stopping usually ends sooner.
    pub epochs: usize,
    /// Adam step size (0 < lr ≤ 1, default 0.01).
    pub learning_rate: f32,
    /// Images per gradient step (1–4096, default 64).
    pub batch_size: usize,
    /// L2 penalty on the weights (0–1, default 1e-4).
    pub weight_decay: f32,
    /// Fraction of each class held out for validation and early stopping (0–0.5, default 0.2).
    pub validation_split: f32,
    /// Seed for the split and the shuffling: same data + same seed → identical weights.
    pub seed: u64,
    /// Epochs without a better validation loss before stopping (1–100, default 10).
    pub patience: usize,
    /// Fewest usable images a class may end with (1–10000, default 5).
    pub min_images_per_class: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 100,
            learning_rate: 0.01,
            batch_size: 64,
            weight_decay: 1e-4,
            validation_split: 0.2,
            seed: 42,
            patience: 10,
            min_images_per_class: 5,
        }
    }
}

impl TrainConfig {
    /// Checks every field's range, naming the first field that is out of it.
    pub fn validate(&self) -> Result<()> {
        let invalid =
            |field: &'static str, reason: String| Err(VisionError::InvalidConfig { field, reason });
        if !(1..=1000).contains(&self.epochs) {
            return invalid("epochs", format!("{} is outside 1–1000", self.epochs));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return invalid(
                "learning_rate",
                format!("{} is outside (0, 1]", self.learning_rate),
            );
        }
        if !(1..=4096).contains(&self.batch_size) {
            return invalid(
                "batch_size",
                format!("{} is outside 1–4096", self.batch_size),
            );
        }
        if !(0.0..=1.0).contains(&self.weight_decay) {
            return invalid(
                "weight_decay",
                format!("{} is outside 0–1", self.weight_decay),
            );
        }
        if !(0.0..=0.5).contains(&self.validation_split) {
            return invalid(
                "validation_split",
                format!("{} is outside 0–0.5", self.validation_split),
            );
        }
        if !(1..=100).contains(&self.patience) {
            return invalid("patience", format!("{} is outside 1–100", self.patience));
        }
        if !(1..=10_000).contains(&self.min_images_per_class) {
            return invalid(
                "min_images_per_class",
                format!("{} is outside 1–10000", self.min_images_per_class),
            );
        }
        Ok(())
    }
}

/// A trained softmax layer over standardised features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub labels: Vec<String>,
    /// Per-feature mean and standard deviation of the training split; features are
    /// standardised with them before the linear layer.
    pub feature_mean: Vec<f32>,
    pub feature_std: Vec<f32>,
    /// One row of `FEATURE_LEN` weights per label.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

impl Head {
    /// Checks the shapes of a head read from a file.
    pub fn validate(&self) -> Result<()> {
        let classes = self.labels.len();
        let ok = classes >= 2
            && self.bias.len() == classes
            && self.weights.len() == classes
            && self.weights.iter().all(|row| row.len() == FEATURE_LEN)
            && self.feature_mean.len() == FEATURE_LEN
            && self.feature_std.len() == FEATURE_LEN
            && self.feature_std.iter().all(|s| *s > 0.0);
        if ok {
            Ok(())
        } else {
            Err(VisionError::InvalidHead(format!(
                "expected ≥ 2 labels, {classes} weight rows of {FEATURE_LEN}, {classes} biases and {FEATURE_LEN} positive standard deviations"
            )))
        }
    }

    /// Class scores (before softmax) for one feature vector.
    pub fn logits(&self, features: &[f32]) -> Vec<f32> {
        let standardised: Vec<f32> = features
            .iter()
            .zip(self.feature_mean.iter().zip(&self.feature_std))
            .map(|(x, (mean, std))| (x - mean) / std)
            .collect();
        self.weights
            .iter()
            .zip(&self.bias)
            .map(|(row, bias)| bias + dot(row, &standardised))
            .collect()
    }

    /// The most likely label index for one feature vector.
    pub fn predict(&self, features: &[f32]) -> usize {
        argmax(&self.logits(features))
    }

    /// Weights and bias with the standardisation folded in (`W' = W / std`,
    /// `b' = b − W'·mean`), so the head is a single matrix multiply in exported models.
    pub fn folded(&self) -> (Vec<f32>, Vec<f32>) {
        let mut weights = Vec::with_capacity(self.labels.len() * FEATURE_LEN);
        let mut bias = Vec::with_capacity(self.labels.len());
        for (row, b) in self.weights.iter().zip(&self.bias) {
            let mut shift = 0.0f64;
            for ((w, mean), std) in row.iter().zip(&self.feature_mean).zip(&self.feature_std) {
                let folded = w / std;
                shift += f64::from(folded) * f64::from(*mean);
                weights.push(folded);
            }
            bias.push((f64::from(*b) - shift) as f32);
        }
        (weights, bias)
    }
}

/// One epoch of the training curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f32,
    /// `None` when nothing was held out for validation.
    pub validation_loss: Option<f32>,
    pub validation_accuracy: Option<f32>,
}

/// Which rows of a [`FeatureSet`] train and which validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
}

/// The outcome of [`train_head`].
#[derive(Debug, Clone)]
pub struct TrainedHead {
    pub head: Head,
    pub history: Vec<EpochStats>,
    /// The epoch whose weights were kept (lowest validation loss).
    pub best_epoch: usize,
    pub split: Split,
    /// Label index of every row of the feature set.
    pub targets: Vec<usize>,
}

/// Sorted distinct labels and each row's index into them.
pub fn label_targets(labels: &[String]) -> (Vec<String>, Vec<usize>) {
    let mut names: Vec<String> = labels.to_vec();
    names.sort();
    names.dedup();
    let targets = labels
        .iter()
        .map(|label| names.binary_search(label).unwrap_or_default())
        .collect();
    (names, targets)
}

/// Holds out `fraction` of every class (rounded, at least one image when the class has two or
/// more and the fraction is positive), chosen by a seeded shuffle.
pub fn stratified_split(targets: &[usize], classes: usize, fraction: f32, seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::new(),
        validation: Vec::new(),
    };
    for class in 0..classes {
        let mut members: Vec<usize> = (0..targets.len())
            .filter(|&i| targets[i] == class)
            .collect();
        members.shuffle(&mut rng);
        let mut held = (members.len() as f32 * fraction).round() as usize;
        if fraction > 0.0 && held == 0 && members.len() >= 2 {
            held = 1;
        }
        held = held.min(members.len().saturating_sub(1));
        split.validation.extend_from_slice(&members[..held]);
        split.train.extend_from_slice(&members[held..]);
    }
    split.train.sort_unstable();
    split.validation.sort_unstable();
    split
}

/// Trains a head on `set`, keeping the weights of the epoch with the lowest validation loss.
///
/// Fails when there are fewer than two labels, or a label has fewer usable images than
/// `config.min_images_per_class`.
pub fn train_head(
    set: &FeatureSet,
    config: &TrainConfig,
    mut on_epoch: impl FnMut(&EpochStats),
) -> Result<TrainedHead> {
    config.validate()?;
    let (labels, targets) = label_targets(&set.labels);
    if labels.len() < 2 {
        return Err(VisionError::NotEnoughLabels {
            found: labels.clone(),
        });
    }
    for (class, label) in labels.iter().enumerate() {
        let usable = targets.iter().filter(|&&t| t == class).count();
        if usable < config.min_images_per_class {
            return Err(VisionError::TooFewImages {
                label: label.clone(),
                usable,
                minimum: config.min_images_per_class,
            });
        }
    }
    let classes = labels.len();
    let split = stratified_split(&targets, classes, config.validation_split, config.seed);
    let (feature_mean, feature_std) = standardisation(set, &split.train);
    let data = Standardised {
        set,
        mean: &feature_mean,
        std: &feature_std,
    };

    let mut model = Linear::zeros(classes);
    let mut adam = Adam::new(classes, config.learning_rate);
    let mut best = (f32::INFINITY, model.clone(), 0usize);
    let mut history = Vec::new();
    let mut since_best = 0;
    let mut order = split.train.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(1));
    let mut batch = vec![0.0f32; config.batch_size * FEATURE_LEN];
    let mut gradient = Linear::zeros(classes);

    for epoch in 1..=config.epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0f64;
        for chunk in order.chunks(config.batch_size) {
            for (slot, &row) in chunk.iter().enumerate() {
                data.write_row(
                    row,
                    &mut batch[slot * FEATURE_LEN..(slot + 1) * FEATURE_LEN],
                );
            }
            gradient.clear();
            let scale = 1.0 / chunk.len() as f32;
            for (slot, &row) in chunk.iter().enumerate() {
                let x = &batch[slot * FEATURE_LEN..(slot + 1) * FEATURE_LEN];
                let probabilities = model.probabilities(x);
                loss_sum -= f64::from(probabilities[targets[row]].max(1e-12).ln());
                for (class, p) in probabilities.iter().enumerate() {
                    let g = (p - if class == targets[row] { 1.0 } else { 0.0 }) * scale;
                    gradient.bias[class] += g;
                    axpy(g, x, gradient.row_mut(class));
                }
            }
            for (g, w) in gradient.weights.iter_mut().zip(&model.weights) {
                *g += config.weight_decay * w;
            }
            adam.step(&mut model, &gradient);
        }
        let train_loss = (loss_sum / order.len().max(1) as f64) as f32;
        let validation = (!split.validation.is_empty())
            .then(|| model.evaluate(&data, &split.validation, &targets));
        let stats = EpochStats {
            epoch,
            train_loss,
            validation_loss: validation.map(|v| v.0),
            validation_accuracy: validation.map(|v| v.1),
        };
        on_epoch(&stats);
        history.push(stats);
        let monitored = validation.map_or(train_loss, |v| v.0);
        if monitored < best.0 {
            best = (monitored, model.clone(), epoch);
            since_best = 0;
        } else {
            since_best += 1;
            if validation.is_some() && since_best >= config.patience {
                break;
            }
        }
    }

    let (_, kept, best_epoch) = best;
    Ok(TrainedHead {
        head: Head {
            labels,
            feature_mean,
            feature_std,
            weights: kept
                .weights
                .chunks(FEATURE_LEN)
                .map(<[f32]>::to_vec)
                .collect(),
            bias: kept.bias,
        },
        history,
        best_epoch,
        split,
        targets,
    })
}

fn standardisation(set: &FeatureSet, rows: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let n = rows.len().max(1) as f64;
    let mut sum = vec![0.0f64; FEATURE_LEN];
    let mut sum_sq = vec![0.0f64; FEATURE_LEN];
    for &row in rows {
        for ((s, q), &x) in sum.iter_mut().zip(sum_sq.iter_mut()).zip(set.row(row)) {
            let x = f64::from(x);
            *s += x;
            *q += x * x;
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std = sum
        .iter()
        .zip(&sum_sq)
        .map(|(s, q)| {
            let variance = (q / n - (s / n).powi(2)).max(0.0);
            // Constant features (often exactly 0 after ReLU6) would divide by zero.
            if variance < 1e-12 {
                1.0
            } else {
                variance.sqrt() as f32
            }
        })
        .collect();
    (mean, std)
}

struct Standardised<'a> {
    set: &'a FeatureSet,
    mean: &'a [f32],
    std: &'a [f32],
}

impl Standardised<'_> {
    fn write_row(&self, row: usize, out: &mut [f32]) {
        for (((o, x), m), s) in out
            .iter_mut()
            .zip(self.set.row(row))
            .zip(self.mean)
            .zip(self.std)
        {
            *o = (x - m) / s;
        }
    }
}

#[derive(Clone)]
struct Linear {
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl Linear {
    fn zeros(classes: usize) -> Self {
        Linear {
            weights: vec![0.0; classes * FEATURE_LEN],
            bias: vec![0.0; classes],
        }
    }

    fn clear(&mut self) {
        self.weights.fill(0.0);
        self.bias.fill(0.0);
    }

    fn row_mut(&mut self, class: usize) -> &mut [f32] {
        &mut self.weights[class * FEATURE_LEN..(class + 1) * FEATURE_LEN]
    }

    fn probabilities(&self, x: &[f32]) -> Vec<f32> {
        let logits: Vec<f32> = self
            .weights
            .chunks_exact(FEATURE_LEN)
            .zip(&self.bias)
            .map(|(row, b)| b + dot(row, x))
            .collect();
        crate::backbone::softmax(&logits)
    }

    /// Mean cross-entropy and accuracy over `rows`.
    fn evaluate(&self, data: &Standardised<'_>, rows: &[usize], targets: &[usize]) -> (f32, f32) {
        let mut x = vec![0.0f32; FEATURE_LEN];
        let mut loss = 0.0f64;
        let mut correct = 0usize;
        for &row in rows {
            data.write_row(row, &mut x);
            let probabilities = self.probabilities(&x);
            loss -= f64::from(probabilities[targets[row]].max(1e-12).ln());
            correct += usize::from(argmax(&probabilities) == targets[row]);
        }
        let n = rows.len().max(1) as f64;
        ((loss / n) as f32, (correct as f64 / n) as f32)
    }
}

struct Adam {
    learning_rate: f32,
    step: i32,
    first: Linear,
    second: Linear,
}

impl Adam {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;
    const EPSILON: f32 = 1e-8;

    fn new(classes: usize, learning_rate: f32) -> Self {
        Adam {
            learning_rate,
            step: 0,
            first: Linear::zeros(classes),
            second: Linear::zeros(classes),
        }
    }

    fn step(&mut self, model: &mut Linear, gradient: &Linear) {
        self.step += 1;
        let correction1 = 1.0 - Self::BETA1.powi(self.step);
        let correction2 = 1.0 - Self::BETA2.powi(self.step);
        let rate = self.learning_rate;
        let update = |params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]| {
            for (((p, g), m), v) in params
                .iter_mut()
                .zip(grads)
                .zip(m.iter_mut())
                .zip(v.iter_mut())
            {
                *m = Self::BETA1 * *m + (1.0 - Self::BETA1) * g;
                *v = Self::BETA2 * *v + (1.0 - Self::BETA2) * g * g;
                *p -= rate * (*m / correction1) / ((*v / correction2).sqrt() + Self::EPSILON);
            }
        };
        update(
            &mut model.weights,
            &gradient.weights,
            &mut self.first.weights,
            &mut self.second.weights,
        );
        update(
            &mut model.bias,
            &gradient.bias,
            &mut self.first.bias,
            &mut self.second.bias,
        );
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise while keeping a fixed order.
    let mut lanes = [0.0f32; 8];
    let (a_chunks, a_rest) = a.as_chunks::<8>();
    let (b_chunks, b_rest) = b.as_chunks::<8>();
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// Index of the largest value; the first one on ties.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gaussian-ish clusters around a per-class centre, from a seeded generator.
    fn clustered(classes: usize, per_class: usize, spread: f32, seed: u64) -> FeatureSet {
        use rand::Rng;
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

    #[test]
    fn same_seed_same_bits_other_seed_other_weights() {
        let set = clustered(3, 40, 6.0, 1);
        let config = TrainConfig::default();
        let a = train_head(&set, &config, |_| {}).unwrap();
        let b = train_head(&set, &config, |_| {}).unwrap();
        let bits = |h: &Head| {
            h.weights
                .iter()
                .flatten()
                .chain(&h.bias)
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&a.head), bits(&b.head));
        assert_eq!(a.history, b.history);
        let c = train_head(&set, &TrainConfig { seed: 7, ..config }, |_| {}).unwrap();
        assert_ne!(bits(&a.head), bits(&c.head));
    }

    #[test]
    fn learns_separable_classes() {
        let set = clustered(4, 50, 3.0, 2);
        let trained = train_head(&set, &TrainConfig::default(), |_| {}).unwrap();
        let correct = trained
            .split
            .validation
            .iter()
            .filter(|&&row| trained.head.predict(set.row(row)) == trained.targets[row])
            .count();
        assert_eq!(correct, trained.split.validation.len());
        let last = trained.history.last().unwrap();
        assert!(last.train_loss < trained.history[0].train_loss);
    }

    #[test]
    fn early_stopping_keeps_the_best_epoch() {
        // Heavy overlap makes validation loss turn up while training loss keeps falling.
        let set = clustered(2, 30, 40.0, 3);
        let config = TrainConfig {
            epochs: 200,
            learning_rate: 0.05,
            patience: 3,
            ..TrainConfig::default()
        };
        let mut seen = 0;
        let trained = train_head(&set, &config, |_| seen += 1).unwrap();
        assert_eq!(seen, trained.history.len());
        assert!(trained.history.len() < 200, "stopped early");
        let best = trained
            .history
            .iter()
            .min_by(|a, b| {
                a.validation_loss
                    .unwrap()
                    .total_cmp(&b.validation_loss.unwrap())
            })
            .unwrap();
        assert_eq!(trained.best_epoch, best.epoch);
        assert_eq!(trained.history.len(), trained.best_epoch + config.patience);
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
        for (config, field) in [
            (
                TrainConfig {
                    epochs: 0,
                    ..TrainConfig::default()
                },
                "epochs",
            ),
            (
                TrainConfig {
                    learning_rate: f32::NAN,
                    ..TrainConfig::default()
                },
                "learning_rate",
            ),
            (
                TrainConfig {
                    batch_size: 0,
                    ..TrainConfig::default()
                },
                "batch_size",
            ),
            (
                TrainConfig {
                    validation_split: 0.9,
                    ..TrainConfig::default()
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
        let head = train_head(&set, &TrainConfig::default(), |_| {})
            .unwrap()
            .head;
        let (weights, bias) = head.folded();
        let x = set.row(5);
        let direct = head.logits(x);
        for (class, expected) in direct.iter().enumerate() {
            let row = &weights[class * FEATURE_LEN..(class + 1) * FEATURE_LEN];
            let folded = bias[class] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>();
            assert!((folded - expected).abs() < 1e-3, "{folded} vs {expected}");
        }
    }
}
