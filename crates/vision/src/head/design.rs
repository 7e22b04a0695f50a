//! The design matrix every fit reads: one standardised `f32` copy of the features, ordered so
//! that every block a fit needs is contiguous — the training rows grouped by fold, then the
//! validation rows — and the way back from fitted parameters to a [`Head`].

use ndarray::{Array2, ArrayView2, s};

use super::basis::RowBasis;
use super::split::{Split, stratified_folds, stratified_split};
use super::{Head, TrainConfig};
use crate::backbone::FEATURE_LEN;
use crate::error::{Result, VisionError};
use crate::extract::FeatureSet;

/// The rows of a [`FeatureSet`], standardised with the training split's statistics.
pub(super) struct OrderedRows {
    /// Training rows grouped by fold (rows past the search limit last), then validation rows.
    pub(super) rows: Array2<f32>,
    /// The label index of each of `rows`.
    pub(super) targets: Vec<usize>,
    /// Fold `f` is rows `fold_bounds[f]..fold_bounds[f + 1]`; rows past `fold_bounds[folds]`
    /// (and before `train_len`) join only the final fits.
    pub(super) fold_bounds: Vec<usize>,
    pub(super) train_len: usize,
    pub(super) feature_mean: Vec<f32>,
    pub(super) feature_std: Vec<f32>,
}

impl OrderedRows {
    /// Orders `set` for `split`. Past `search_limit` training images, the search sees a
    /// stratified, seeded sample; the rest sort last (as fold number `folds`) and join only the
    /// final fits.
    pub(super) fn new(
        set: &FeatureSet,
        split: &Split,
        targets: &[usize],
        classes: usize,
        config: &TrainConfig,
        search_limit: usize,
    ) -> OrderedRows {
        let (feature_mean, feature_std) = standardisation(set, &split.train);
        let train_targets_unordered: Vec<usize> = split.train.iter().map(|&r| targets[r]).collect();
        let mut fold_of =
            stratified_folds(&train_targets_unordered, classes, config.folds, config.seed);
        if split.train.len() > search_limit {
            let fraction = 1.0 - search_limit as f32 / split.train.len() as f32;
            let left_out = stratified_split(
                &train_targets_unordered,
                classes,
                fraction,
                config.seed.wrapping_add(1),
            );
            for position in left_out.validation {
                fold_of[position] = config.folds;
            }
        }
        let mut train_order: Vec<(usize, usize)> = split
            .train
            .iter()
            .zip(&fold_of)
            .map(|(&row, &fold)| (fold, row))
            .collect();
        train_order.sort_unstable();
        let mut fold_bounds = vec![0; config.folds + 1];
        for &(fold, _) in &train_order {
            if fold < config.folds {
                fold_bounds[fold + 1] += 1;
            }
        }
        for fold in 0..config.folds {
            fold_bounds[fold + 1] += fold_bounds[fold];
        }
        let order: Vec<usize> = train_order
            .iter()
            .map(|&(_, row)| row)
            .chain(split.validation.iter().copied())
            .collect();
        let mut rows = Array2::<f32>::zeros((order.len(), FEATURE_LEN));
        for (mut target, &row) in rows.rows_mut().into_iter().zip(&order) {
            for (((o, x), m), s) in target
                .iter_mut()
                .zip(set.row(row))
                .zip(&feature_mean)
                .zip(&feature_std)
            {
                *o = (x - m) / s;
            }
        }
        OrderedRows {
            rows,
            targets: order.iter().map(|&r| targets[r]).collect(),
            fold_bounds,
            train_len: split.train.len(),
            feature_mean,
            feature_std,
        }
    }

    pub(super) fn train_rows(&self) -> ArrayView2<'_, f32> {
        self.rows.slice(s![..self.train_len, ..])
    }

    pub(super) fn train_targets(&self) -> &[usize] {
        &self.targets[..self.train_len]
    }

    /// The head for fitted `params`: class-major weights then biases, over the features or,
    /// when the fit ran in `basis`, over the basis coordinates of the training rows.
    pub(super) fn head(
        &self,
        params: &[f64],
        basis: Option<&RowBasis>,
        labels: &[String],
    ) -> Result<Head> {
        let classes = labels.len();
        let columns = basis.map_or(FEATURE_LEN, RowBasis::rank);
        let split_at = classes * columns;
        let fitted = ArrayView2::from_shape((classes, columns), &params[..split_at])
            .map_err(|e| VisionError::HeadTraining(e.to_string()))?;
        let weights = match basis {
            Some(basis) => basis.to_features(fitted, self.train_rows()),
            None => fitted.to_owned(),
        };
        Ok(Head {
            labels: labels.to_vec(),
            feature_mean: self.feature_mean.clone(),
            feature_std: self.feature_std.clone(),
            weights: weights
                .rows()
                .into_iter()
                .map(|row| row.iter().map(|&w| w as f32).collect())
                .collect(),
            bias: params[split_at..].iter().map(|&b| b as f32).collect(),
        })
    }
}

/// Per-feature mean and standard deviation over `rows`.
pub(super) fn standardisation(set: &FeatureSet, rows: &[usize]) -> (Vec<f32>, Vec<f32>) {
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
