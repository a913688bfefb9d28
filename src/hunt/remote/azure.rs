//! Azure remotes — NOT BUILT YET: Graph service-principal sign-ins (`--azure-graph`) and the
//! Activity Log of a subscription (`--azure-subscription`). Both answer an "incomplete" problem
//! so that a hunt asking for them never looks clean. Exports of both are read today
//! (`--azure-signins FILE`, `--azure-activity FILE`).
use super::{Context, Fetched, PageSender, Window};

pub(super) async fn fetch_signins(
    _ctx: &Context,
    _app: Option<&str>,
    _window: Window,
    _tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    out.failed(
        "graph:auditLogs/signIns",
        "fetching Graph sign-ins is not built yet (hunt in an export: --azure-signins FILE)",
    );
    out
}

pub(super) async fn fetch_activity(
    _ctx: &Context,
    sub: &str,
    _window: Window,
    _tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    out.failed(
        format!("azure:subscriptions/{sub}/activity-log"),
        "fetching the Activity Log is not built yet (hunt in an export: --azure-activity FILE)",
    );
    out
}
