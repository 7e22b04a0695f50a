//! Classification as the product does it: the backbone plus either its ImageNet classifier or
//! a trained head.

use std::path::Path;
use std::sync::Arc;

use crate::backbone::{Backbone, Classification, top_k};
use crate::bundle::{HeadDocument, read_head_document};
use crate::confidence::Thresholds;
use crate::decode::DecodeLimits;
use crate::error::Result;
use crate::head::Head;

/// A loaded model, cheap to swap heads on: the backbone is shared.
#[derive(Debug, Clone)]
pub struct Classifier {
    backbone: Arc<Backbone>,
    head: Option<Arc<Head>>,
    thresholds: Option<Arc<Thresholds>>,
}

impl Classifier {
    /// The backbone's own 1000 ImageNet classes.
    pub fn imagenet(backbone: Arc<Backbone>) -> Self {
        Classifier {
            backbone,
            head: None,
            thresholds: None,
        }
    }

    /// A trained head on top of `backbone`; fails if the head was trained on another backbone.
    pub fn with_head(backbone: Arc<Backbone>, head: Head) -> Self {
        Classifier {
            backbone,
            head: Some(Arc::new(head)),
            thresholds: None,
        }
    }

    /// The head of `document` with its confidence thresholds; fails as [`HeadDocument::head_for`].
    pub fn from_document(backbone: Arc<Backbone>, document: &HeadDocument) -> Result<Self> {
        let head = document.head_for(&backbone)?;
        let mut classifier = Self::with_head(backbone, head);
        classifier.thresholds = document.thresholds.clone().map(Arc::new);
        Ok(classifier)
    }

    /// Loads the head of a bundle directory (see [`crate::bundle`]).
    pub fn from_bundle_dir(backbone: Arc<Backbone>, dir: &Path) -> Result<Self> {
        Self::from_document(backbone, &read_head_document(dir)?)
    }

    /// The confidence threshold of `label`, for a trained head that has thresholds.
    pub fn threshold(&self, label: &str) -> Option<f32> {
        let thresholds = self.thresholds.as_ref()?;
        let index = self.labels().iter().position(|l| l == label)?;
        Some(thresholds.of(index))
    }

    pub fn backbone(&self) -> &Arc<Backbone> {
        &self.backbone
    }

    /// The trained head, if this is not the plain ImageNet classifier.
    pub fn head(&self) -> Option<&Head> {
        self.head.as_deref()
    }

    pub fn labels(&self) -> &[String] {
        self.head
            .as_ref()
            .map_or(self.backbone.labels(), |head| &head.labels)
    }

    /// Bytes in, the `k` most probable classes out.
    pub fn classify(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
        k: usize,
    ) -> Result<Classification> {
        let result = self.backbone.infer_bytes(bytes, limits)?;
        let top = match &self.head {
            Some(head) => top_k(&head.logits(&result.inference.features), &head.labels, k),
            None => top_k(&result.inference.logits, self.backbone.labels(), k),
        };
        Ok(Classification {
            top,
            width: result.width,
            height: result.height,
            format: result.format,
            timings: result.timings,
        })
    }
}
