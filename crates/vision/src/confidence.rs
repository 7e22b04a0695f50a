//! Calibrated confidence: a per-label threshold on the top label's score, chosen on the
//! validation split where the label's F1 is best (what Rekognition Custom Labels calls the
//! "assumed threshold"), and the per-image records the thresholds and the report come from.

use serde::{Deserialize, Serialize};

/// How each label's threshold was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdSource {
    /// The score that gave the label its best F1 on the validation split.
    ValidationF1,
    /// The job's `min_confidence`, the same for every label.
    MinConfidence,
    /// Nothing was held out to choose on: every threshold is 0, so every prediction clears it.
    NoValidation,
}

/// The thresholds stored with a head: `per_label[i]` belongs to `labels[i]` of the head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub per_label: Vec<f32>,
    pub source: ThresholdSource,
}

impl Thresholds {
    /// The threshold of label index `label` (0 for an index the head does not have).
    pub fn of(&self, label: usize) -> f32 {
        self.per_label.get(label).copied().unwrap_or(0.0)
    }
}

/// One held-out image as the model saw it: a line of `evaluation.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluatedImage {
    /// The dataset object's key.
    pub key: String,
    pub truth: String,
    pub predicted: String,
    /// Softmax probability of the predicted label.
    pub score: f32,
}

impl EvaluatedImage {
    pub fn is_correct(&self) -> bool {
        self.truth == self.predicted
    }
}

/// For each of `classes` labels, the threshold on the score of a prediction of that label that
/// maximises the label's F1 over `images` (truth, predicted, score of the predicted label):
/// predictions of the label below the threshold count as not made. The threshold is the
/// lowest score still counted at the best F1 (on a tie, the one that counts more), so a new
/// image scoring below every validated prediction of its label is flagged as not confident.
/// A label never predicted has threshold 0 (no evidence either way); one never predicted
/// rightly gets a threshold above all its scores.
pub fn choose_thresholds(images: &[(usize, usize, f32)], classes: usize) -> Vec<f32> {
    (0..classes)
        .map(|label| {
            let actual = images.iter().filter(|(t, ..)| *t == label).count();
            // This label's predictions, highest score first, with whether each was right.
            let mut predicted: Vec<(f32, bool)> = images
                .iter()
                .filter(|(_, p, _)| *p == label)
                .map(|&(t, _, score)| (score, t == label))
                .collect();
            predicted.sort_by(|a, b| b.0.total_cmp(&a.0));
            // Keeping the top `kept` predictions: F1 = 2·TP / (2·TP + FP + FN).
            let (mut best_kept, mut best_f1, mut hits) = (0, -1.0f64, 0usize);
            for kept in 0..=predicted.len() {
                if kept > 0 {
                    hits += usize::from(predicted[kept - 1].1);
                }
                let denominator = kept + actual;
                let f1 = if denominator == 0 {
                    0.0
                } else {
                    2.0 * hits as f64 / denominator as f64
                };
                // `>=`: a tie keeps more predictions (a lower threshold).
                if f1 >= best_f1 {
                    (best_kept, best_f1) = (kept, f1);
                }
            }
            match (best_kept, predicted.first()) {
                (_, None) => 0.0,
                // Never right on the validation split: no score of it is to be trusted.
                (_, Some(top)) if best_f1 <= 0.0 => top.0.next_up(),
                (0, Some(top)) => top.0.next_up(),
                (kept, Some(_)) => predicted[kept - 1].0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_drops_the_low_scoring_mistakes() {
        // Label 0 predicted five times: right at 0.9, 0.8, 0.7; wrong at 0.4 and 0.3.
        let images = [
            (0, 0, 0.9),
            (0, 0, 0.8),
            (0, 0, 0.7),
            (1, 0, 0.4),
            (1, 0, 0.3),
            (1, 1, 0.95),
            (1, 1, 0.6),
        ];
        let thresholds = choose_thresholds(&images, 2);
        assert_eq!(thresholds[0], 0.7, "the 0.4 and 0.3 mistakes dropped");
        assert_eq!(
            thresholds[1], 0.6,
            "label 1 was never wrong: its lowest score"
        );
    }

    #[test]
    fn a_mistake_above_a_hit_is_kept_when_dropping_costs_more() {
        // Dropping the 0.5 hit to lose the 0.45 mistake below it would lower F1.
        let images = [(0, 0, 0.9), (1, 0, 0.6), (0, 0, 0.5), (0, 1, 0.7)];
        let thresholds = choose_thresholds(&images, 2);
        // F1 keeping the top 1, 2, 3 predictions: 2/4 = 0.5, 2/5 = 0.4, 4/6 = 0.67.
        assert_eq!(thresholds[0], 0.5, "{thresholds:?}");
    }

    #[test]
    fn a_label_only_ever_wrong_gets_a_threshold_above_its_scores() {
        let images = [(0, 1, 0.8), (0, 1, 0.6), (0, 0, 0.3)];
        let thresholds = choose_thresholds(&images, 2);
        assert!(thresholds[1] > 0.8, "{thresholds:?}");
        assert_eq!(thresholds[0], 0.3);
    }

    #[test]
    fn labels_never_predicted_have_no_threshold() {
        assert_eq!(choose_thresholds(&[(0, 0, 0.9)], 3), vec![0.9, 0.0, 0.0]);
    }
}
