//! Scoring predictions against the truth (accuracy, per-label precision/recall/F1, confusion),
//! as reported in `metrics.json`, `lambda-vision eval` and the email.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// How many examples truly have this label.
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1 scores: every class counts the same.
    pub macro_f1: f64,
    pub labels: Vec<String>,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[truth][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

/// Scores predictions against the truth; both are label indices into `labels`. Precision,
/// recall and F1 are 0 where undefined (no predictions or no examples of a class).
pub fn evaluate(truth: &[usize], predicted: &[usize], labels: &[String]) -> Evaluation {
    let classes = labels.len();
    let mut confusion = vec![vec![0usize; classes]; classes];
    for (&t, &p) in truth.iter().zip(predicted) {
        if t < classes && p < classes {
            confusion[t][p] += 1;
        }
    }
    let ratio = |num: usize, den: usize| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let per_class: Vec<ClassMetrics> = (0..classes)
        .map(|c| {
            let hits = confusion[c][c];
            let support: usize = confusion[c].iter().sum();
            let predicted_as: usize = confusion.iter().map(|row| row[c]).sum();
            let precision = ratio(hits, predicted_as);
            let recall = ratio(hits, support);
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassMetrics {
                label: labels[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
    let total: usize = confusion.iter().flatten().sum();
    Evaluation {
        accuracy: ratio(correct, total),
        macro_f1: per_class.iter().map(|c| c.f1).sum::<f64>() / classes.max(1) as f64,
        labels: labels.to_vec(),
        per_class,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_example() {
        let labels: Vec<String> = ["cat", "dog", "owl"].map(String::from).to_vec();
        // truth:     cat cat cat dog dog owl
        // predicted: cat cat dog dog cat cat
        let e = evaluate(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 0, 0], &labels);
        assert_eq!(
            e.confusion,
            vec![vec![2, 1, 0], vec![1, 1, 0], vec![1, 0, 0]]
        );
        assert!((e.accuracy - 0.5).abs() < 1e-12);
        let cat = &e.per_class[0];
        assert!((cat.precision - 0.5).abs() < 1e-12, "2 of 4 predicted cats");
        assert!((cat.recall - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(cat.support, 3);
        assert_eq!(e.per_class[2].f1, 0.0, "owl never predicted");
        let expected_macro = (cat.f1 + 0.5 + 0.0) / 3.0;
        assert!((e.macro_f1 - expected_macro).abs() < 1e-12);
    }
}
