//! Every sample event under `events/` parses and routes where its README says.

use std::path::PathBuf;

use pipeline::S3Event;
use pipeline::event::created_objects;
use pipeline::layout::{InputKey, parse_result_key};

fn event(name: &str) -> S3Event {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn routes(name: &str) -> Vec<InputKey> {
    created_objects(&event(name))
        .into_iter()
        .map(|o| InputKey::parse(&o.unwrap().key).unwrap())
        .collect()
}

#[test]
fn input_bucket_events_route_to_images_and_jobs() {
    assert_eq!(
        routes("image-upload.json"),
        [InputKey::Image {
            path: "cats/chelsea.jpg".into()
        }]
    );
    assert_eq!(
        routes("job-spec.json"),
        [InputKey::JobSpec {
            job_id: "flowers-2026-11-29".into()
        }]
    );
    assert_eq!(
        routes("key-with-spaces-unicode.json"),
        [InputKey::Image {
            path: "summer holiday/café à Paris.jpg".into()
        }]
    );
    assert_eq!(
        routes("multi-record.json"),
        [
            InputKey::Image {
                path: "space/astronaut.jpg".into()
            },
            InputKey::Image {
                path: "coffee/espresso.jpg".into()
            },
            InputKey::JobSpec {
                job_id: "flowers-2026-11-29".into()
            },
        ]
    );
    let objects = created_objects(&event("image-upload.json"));
    let object = objects[0].as_ref().unwrap();
    assert_eq!(object.size, Some(35_042));
    assert!(object.etag.is_some());
}

#[test]
fn the_result_event_routes_to_the_notifier() {
    let objects = created_objects(&event("result-created.json"));
    let key = &objects[0].as_ref().unwrap().key;
    assert_eq!(
        parse_result_key(key).unwrap().as_deref(),
        Some("flowers-2026-11-29")
    );
}
