//! stub
use super::{Context, Fetched, PageSender, Window};

pub(super) async fn fetch(
    _ctx: &Context,
    what: &str,
    _narrow: Option<&str>,
    _window: Window,
    _tx: &PageSender,
) -> Fetched {
    let mut out = Fetched::default();
    out.failed(what, "not built yet");
    out
}
