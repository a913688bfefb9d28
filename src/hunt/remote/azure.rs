//! stub
use super::{Context, Fetched, PageSender, Window};

pub(super) async fn fetch_signins(
    _ctx: &Context,
    _app: Option<&str>,
    _window: Window,
    _tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    out.failed("graph", "not built yet");
    out
}

pub(super) async fn fetch_activity(
    _ctx: &Context,
    sub: &str,
    _window: Window,
    _tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    out.failed(sub, "not built yet");
    out
}
