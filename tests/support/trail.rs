//! The Invictus CloudTrail dataset (`../shared/datasets/cloudtrail-invictus/`) as the remote
//! sources serve it: uploaded to an S3 bucket (plain and gzip copies, CloudTrail's key layout),
//! or loaded into the AWS simulator's event history for LookupEvents.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The account and layout of the dataset's delivery.
pub const DAY_PREFIX: &str = "AWSLogs/218007301253/CloudTrail/us-east-1/2023/07/10";

/// The dataset folder, or None (after saying so loudly) when it is absent.
pub fn invictus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/cloudtrail-invictus");
    if p.is_dir() {
        Some(p)
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!! SKIPPED: dataset {} is absent; this test proves nothing here !!!!!!\n",
            p.display()
        );
        None
    }
}

/// The dataset's log files (`.json`), sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    out.sort();
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An S3 client for an SDK configuration pointing at moto (path-style addressing).
pub fn s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
}

pub async fn put(client: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PutObject {key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        });
}

/// Loads every record of the dataset into the AWS simulator's event history; returns how many.
pub fn load_into(state: &mut rekey::sandbox::aws::AwsState, dir: &Path) -> usize {
    files(dir)
        .iter()
        .map(|f| {
            state
                .load_cloudtrail_records(&std::fs::read_to_string(f).unwrap())
                .unwrap()
        })
        .sum()
}
