//! The backbone, compiled on a background thread from the first instant of a cold start, so
//! the Lambda runtime's first poll and the first S3 round trips overlap with it.

use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use vision::Backbone;

use crate::error::{PipelineError, Result};

/// A backbone that is ready or on its way; [`BackboneLoader::get`] waits for it.
pub struct BackboneLoader {
    ready: OnceCell<Arc<Backbone>>,
    loading: Mutex<Option<JoinHandle<vision::Result<Backbone>>>>,
}

impl BackboneLoader {
    /// Starts `load` now on a blocking thread (needs a Tokio runtime).
    pub fn spawn(load: impl FnOnce() -> vision::Result<Backbone> + Send + 'static) -> Self {
        BackboneLoader {
            ready: OnceCell::new(),
            loading: Mutex::new(Some(tokio::task::spawn_blocking(load))),
        }
    }

    /// The backbone, once loaded. A failed load is reported to the first caller, and later
    /// callers are told it failed (the bundled model does not fail to load by chance).
    pub async fn get(&self) -> Result<Arc<Backbone>> {
        self.ready
            .get_or_try_init(|| async {
                let loading = self.loading.lock().ok().and_then(|mut slot| slot.take());
                let Some(loading) = loading else {
                    return Err(PipelineError::Vision(vision::VisionError::ModelLoad(
                        "the backbone failed to load at cold start; see the first error".to_owned(),
                    )));
                };
                let backbone = loading.await??;
                Ok(Arc::new(backbone))
            })
            .await
            .cloned()
    }
}

impl From<Arc<Backbone>> for BackboneLoader {
    fn from(backbone: Arc<Backbone>) -> Self {
        BackboneLoader {
            ready: OnceCell::new_with(Some(backbone)),
            loading: Mutex::new(None),
        }
    }
}

/// `loaded` when it was compiled for `input_size`, else the bundled backbone compiled for it
/// (seconds of CPU, on a blocking thread): a head trained at another size needs its own.
pub async fn backbone_at(loaded: Arc<Backbone>, input_size: u32) -> Result<Arc<Backbone>> {
    if input_size == loaded.preprocessor().input_size() {
        return Ok(loaded);
    }
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || {
            Backbone::from_bytes(vision::BUNDLED_MODEL, input_size)
        })
        .await??,
    ))
}
