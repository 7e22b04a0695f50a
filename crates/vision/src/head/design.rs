//! The rows the penalty search reads: a standardised `f32` copy of the searched training rows,
//! grouped by fold so that every fold's training rows are two contiguous blocks, and the way
//! back from fitted parameters to a [`Head`]. The copy is bounded: at most the search limit
//! ([`super::CV_MAX_IMAGES`]), or every training row when there are fewer than features (the
//! change of basis needs them all). The final fits read the extracted features in place.

use ndarray::{Array2, ArrayView2, s};

use super::basis::RowBasis;
use super::split::{Split, stratified_folds, stratified_split};
use super::{Head, TrainConfig};
use crate::backbone::FEATURE_LEN;
use crate::error::{Result, VisionError};
use crate::extract::FeatureSet;

/// Searched training rows of a [`FeatureSet`], standardised with the training split's statistics.
pub(super) struct OrderedRows {
    /// Training rows grouped by fold; past `fold_bounds[folds]`, the rows the search leaves out,
    /// present only when the basis needs every training row.
    pub(super) rows: Array2<f32>,
    /// The label index of each of `rows`.
    pub(super) targets: Vec<usize>,
    /// Fold `f` is rows `fold_bounds[f]..fold_bounds[f + 1]`.
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
        let copied = if split.train.len() < FEATURE_LEN {
            split.train.len()
        } else {
            fold_bounds[config.folds]
        };
        let order: Vec<usize> = train_order[..copied].iter().map(|&(_, row)| row).collect();
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

    /// The rows the search fits and scores: those of the folds.
    pub(super) fn searched(&self) -> (ArrayView2<'_, f32>, &[usize]) {
        let searched = self.fold_bounds[self.fold_bounds.len() - 1];
        (
            self.rows.slice(s![..searched, ..]),
            &self.targets[..searched],
        )
    }

    /// The change of basis for fewer training rows than features, when it applies: then `rows`
    /// holds every training row.
    pub(super) fn basis(&self) -> Option<RowBasis> {
        (self.train_len < FEATURE_LEN).then(|| RowBasis::new(self.rows.view()))
    }

    /// The head for fitted `params`: class-major weights then biases, over the standardised
    /// features or, when the fit ran in `basis`, over the basis coordinates of `rows`.
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
            Some(basis) => basis.to_features(fitted, self.rows.view()),
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
