//! What a fit reads: rows of a matrix where they already are (picked by index when they are
//! scattered), and the standardisation to apply on the fly when they are raw features, so that
//! the final fits need no copy of a large training set.

use ndarray::ArrayView2;

use super::logistic::{BLOCK, block_rows};

/// Some rows of a row-major matrix with their labels.
pub(super) struct Block<'a> {
    pub matrix: ArrayView2<'a, f32>,
    /// Which rows of `matrix`, in this order; every row when `None`.
    pub picked: Option<&'a [usize]>,
    /// The label index of each row taken.
    pub targets: &'a [usize],
}

/// Per-feature mean and standard deviation: a fit over raw rows `x` is a fit over
/// `(x − mean) / std`.
#[derive(Clone, Copy)]
pub(super) struct Standardisation<'a> {
    pub mean: &'a [f32],
    pub std: &'a [f32],
}

impl<'a> Block<'a> {
    pub fn whole(matrix: ArrayView2<'a, f32>, targets: &'a [usize]) -> Self {
        Block {
            matrix,
            picked: None,
            targets,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.picked.map_or(self.matrix.nrows(), <[usize]>::len)
    }

    /// Calls `visit` with up to [`BLOCK`] rows at a time and their targets, in order.
    #[inline(always)]
    pub(super) fn for_each_chunk(&self, mut visit: impl FnMut(&[&[f32]], &[usize])) {
        let matrix = self.matrix.as_standard_layout();
        let columns = matrix.ncols();
        let Some(data) = matrix.as_slice() else {
            unreachable!("a standard-layout array is one slice")
        };
        match self.picked {
            None => {
                for (chunk, targets) in data
                    .chunks(BLOCK * columns.max(1))
                    .zip(self.targets.chunks(BLOCK))
                {
                    let (rows, count) = block_rows(chunk, columns);
                    visit(&rows[..count], targets);
                }
            }
            Some(picked) => {
                for (indices, targets) in picked.chunks(BLOCK).zip(self.targets.chunks(BLOCK)) {
                    let mut rows: [&[f32]; BLOCK] = [&[]; BLOCK];
                    for (slot, &row) in rows.iter_mut().zip(indices) {
                        *slot = &data[row * columns..(row + 1) * columns];
                    }
                    visit(&rows[..indices.len()], targets);
                }
            }
        }
    }
}

impl Standardisation<'_> {
    /// The weights and biases that score raw rows as `params` score standardised ones:
    /// `W' = W / std`, `b' = b − W'·mean`.
    pub(super) fn fold(&self, weights: &[f64], bias: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let columns = self.mean.len();
        let mut folded = Vec::with_capacity(weights.len());
        let mut shifted = Vec::with_capacity(bias.len());
        for (row, b) in weights.chunks(columns.max(1)).zip(bias) {
            let mut shift = 0.0;
            for ((w, &mean), &std) in row.iter().zip(self.mean).zip(self.std) {
                let w = w / f64::from(std);
                shift += w * f64::from(mean);
                folded.push(w);
            }
            shifted.push(b - shift);
        }
        (folded, shifted)
    }

    /// Turns the gradient over folded weights (`Σ r·x`) into the gradient over the standardised
    /// ones: `(Σ r·x − mean · Σ r) / std`, where `Σ r` is the bias gradient.
    pub(super) fn unfold_gradient(&self, weight_gradient: &mut [f64], bias_gradient: &[f64]) {
        let columns = self.mean.len();
        for (row, residual_sum) in weight_gradient
            .chunks_mut(columns.max(1))
            .zip(bias_gradient)
        {
            for ((g, &mean), &std) in row.iter_mut().zip(self.mean).zip(self.std) {
                *g = (*g - f64::from(mean) * residual_sum) / f64::from(std);
            }
        }
    }
}
