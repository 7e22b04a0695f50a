//! The stack on moto: moto's S3, SQS (for the event notifications S3 really sends) and SES
//! v2, started on free loopback ports and stopped when the test ends, with the real handlers
//! configured as the template configures them. `pip install 'moto[server]'` provides
//! `moto_server` (`.ci/run` installs it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use pipeline::documents::JobResult;
use pipeline::event::relayed_event;
use pipeline::handlers::TrainerOutcome;
use pipeline::{
    Notifier, S3Event, S3Store, SesMailer, Trainer, TrainerEvent, TrainerLauncher, TrainerOptions,
    UploadTrigger,
};

use super::{create_buckets, dataset_objects, stack_config};

/// A moto server process, killed on drop (even when a test fails).
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program} ({e}); install it with: pip install 'moto[server]'")
            });
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn http(&self, method: &str, path: &str) -> String {
        let address = self.url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }

    /// Messages moto's SES has accepted (simple and raw).
    pub fn sent_emails(&self) -> Vec<serde_json::Value> {
        let data: serde_json::Value =
            serde_json::from_str(&self.http("GET", "/moto-api/data.json")).unwrap();
        let mut sent = Vec::new();
        for kind in ["Message", "RawMessage"] {
            if let Some(messages) = data["ses"][kind].as_array() {
                sent.extend(messages.iter().cloned());
            }
        }
        sent
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn aws(url: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .endpoint_url(url)
        .load()
        .await
}

/// Records trainer starts instead of invoking Lambda (which moto cannot run without Docker).
#[derive(Default)]
pub struct RecordingLauncher {
    pub started: Mutex<Vec<(String, u32)>>,
}

#[async_trait::async_trait]
impl TrainerLauncher for RecordingLauncher {
    async fn start(&self, job_id: &str, continuation: u32) -> pipeline::Result<()> {
        self.started
            .lock()
            .unwrap()
            .push((job_id.to_owned(), continuation));
        Ok(())
    }
}

pub const INPUT: &str = "lv-input";
pub const RESULTS: &str = "lv-results";
pub const SENDER: &str = "reports@example.com";

pub struct Stack {
    /// Kept alive for the duration of the test; dropping it stops the server.
    pub s3_moto: Moto,
    pub ses_moto: Moto,
    pub store: S3Store,
    pub sqs: aws_sdk_sqs::Client,
    pub input_queue: String,
    pub results_queue: String,
    pub launcher: Arc<RecordingLauncher>,
    pub trigger: UploadTrigger,
    pub trainer: Trainer,
    pub notifier: Notifier,
}

pub async fn stack(options: TrainerOptions) -> Stack {
    stack_with(options, 20).await
}

pub async fn stack_with(options: TrainerOptions, max_continuations: u32) -> Stack {
    let s3_moto = Moto::start();
    // SES on its own moto: data.json breaks once a process has seen a multipart upload.
    let ses_moto = Moto::start();
    let config = aws(&s3_moto.url).await;
    let ses_config = aws(&ses_moto.url).await;
    let store = S3Store::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    create_buckets(&store, [INPUT, RESULTS]).await;
    // The template's event filters, as S3 notification configuration to SQS queues.
    let input_queue = queue(&sqs, "input-events").await;
    let results_queue = queue(&sqs, "results-events").await;
    let rule = |prefix: &str, suffix: Option<&str>, queue: &str| {
        let mut rules = vec![
            FilterRule::builder()
                .name(FilterRuleName::Prefix)
                .value(prefix)
                .build(),
        ];
        if let Some(suffix) = suffix {
            rules.push(
                FilterRule::builder()
                    .name(FilterRuleName::Suffix)
                    .value(suffix)
                    .build(),
            );
        }
        QueueConfiguration::builder()
            .queue_arn(format!("arn:aws:sqs:us-east-1:123456789012:{queue}"))
            .events(Event::S3ObjectCreated)
            .filter(
                NotificationConfigurationFilter::builder()
                    .key(S3KeyFilter::builder().set_filter_rules(Some(rules)).build())
                    .build(),
            )
            .build()
            .unwrap()
    };
    store
        .client()
        .put_bucket_notification_configuration()
        .bucket(INPUT)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(rule("images/", None, "input-events"))
                .queue_configurations(rule("jobs/", Some(".json"), "input-events"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    store
        .client()
        .put_bucket_notification_configuration()
        .bucket(RESULTS)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(rule("results/", Some(".json"), "results-events"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    aws_sdk_sesv2::Client::new(&ses_config)
        .create_email_identity()
        .email_identity(SENDER)
        .send()
        .await
        .unwrap();

    let pipeline_config = stack_config(
        INPUT,
        RESULTS,
        &[
            ("SENDER_ADDRESS", SENDER.to_owned()),
            ("MAX_CONTINUATIONS", max_continuations.to_string()),
        ],
    );
    let backbone = Arc::new(vision::Backbone::bundled().unwrap());
    let launcher = Arc::new(RecordingLauncher::default());
    Stack {
        trigger: UploadTrigger::new(
            pipeline_config.clone(),
            store.clone(),
            launcher.clone(),
            backbone.clone(),
        ),
        trainer: Trainer::new(
            pipeline_config.clone(),
            store.clone(),
            launcher.clone(),
            backbone,
            options,
        ),
        notifier: Notifier::new(
            pipeline_config,
            store.clone(),
            Arc::new(SesMailer::new(&ses_config)),
        ),
        s3_moto,
        ses_moto,
        store,
        sqs,
        input_queue,
        results_queue,
        launcher,
    }
}

pub async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned()
}

impl Stack {
    /// The S3 events delivered to `queue` since the last call, completed where moto omits
    /// sections S3 sends (moto's `s3:TestEvent` dropped).
    pub async fn events(&self, queue: &str) -> Vec<S3Event> {
        let mut events = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let messages = output.messages();
            if messages.is_empty() {
                return events;
            }
            for message in messages {
                let body = serde_json::from_str(message.body().unwrap()).unwrap();
                events.extend(relayed_event(body).unwrap());
                self.sqs
                    .delete_message()
                    .queue_url(queue)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        self.store
            .put(bucket, key, bytes, "application/octet-stream")
            .await
            .unwrap();
    }

    pub async fn upload_dataset(&self, dataset: &str) {
        for (key, bytes) in dataset_objects(dataset) {
            self.put(INPUT, &key, bytes).await;
        }
    }

    /// A failed job's result, as the trainer would write it, for tests of the notifier.
    pub async fn put_failed_result(&self, job_id: &str) {
        let result = serde_json::json!({
            "job_id": job_id, "status": "failed", "notify": ["owner@example.com"],
            "error": {"kind": "invalid_spec", "message": "m"}, "finished_at": "2026-12-05T00:00:00Z"
        });
        let key = format!("results/{job_id}.json");
        self.put(RESULTS, &key, result.to_string().into_bytes())
            .await;
    }

    pub async fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> T {
        serde_json::from_slice(&self.store.get(RESULTS, key).await.unwrap().bytes).unwrap()
    }

    pub async fn run_trainer(
        &self,
        job_id: &str,
        deadline: impl Fn() -> Instant,
    ) -> (JobResult, u32) {
        let mut continuation = 0;
        for _ in 0..50 {
            match self
                .trainer
                .handle(
                    &TrainerEvent {
                        job_id: job_id.to_owned(),
                        continuation,
                    },
                    deadline(),
                )
                .await
                .unwrap()
            {
                TrainerOutcome::Finished(result) => return (*result, continuation),
                TrainerOutcome::Continued {
                    continuation: next, ..
                } => continuation = next,
                TrainerOutcome::AlreadyFinished => panic!("already finished"),
                TrainerOutcome::AlreadyRunning => panic!("already running"),
                TrainerOutcome::HandedToStateMachine { .. } => panic!("handed to a state machine"),
            }
        }
        panic!("no end after 50 invocations");
    }
}
