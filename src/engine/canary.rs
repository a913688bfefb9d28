//! The canary of a rotation: trigger a named pipeline with the new credential in place and
//! wait until every workflow succeeds, before the old credential is disabled.

use crate::circleci::CircleCiClient;
use std::time::Duration;

/// Triggers `project`'s pipeline on `branch` and polls its workflows. `Ok(pipeline id)` when
/// every workflow succeeded; `Err(why)` on a failed workflow, an API error or the timeout.
pub async fn run(
    client: &CircleCiClient,
    project: &str,
    branch: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<String, String> {
    let pipeline = client
        .trigger_pipeline(project, branch)
        .await
        .map_err(|e| format!("cannot trigger a pipeline of {project}: {e}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let workflows = client
            .pipeline_workflows(&pipeline.id)
            .await
            .map_err(|e| format!("cannot read pipeline {}: {e}", pipeline.id))?;
        if !workflows.is_empty() && workflows.iter().all(|w| w.is_finished()) {
            let failed: Vec<String> = workflows
                .iter()
                .filter(|w| w.status != "success")
                .map(|w| format!("{} {}", w.name, w.status))
                .collect();
            return if failed.is_empty() {
                Ok(pipeline.id)
            } else {
                Err(format!(
                    "pipeline {} of {project}: {}",
                    pipeline.number,
                    failed.join(", ")
                ))
            };
        }
        if tokio::time::Instant::now() + poll > deadline {
            return Err(format!(
                "pipeline {} of {project} did not finish within {}s",
                pipeline.number,
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(poll).await;
    }
}
