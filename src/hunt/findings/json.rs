//! JSON text of findings and of their groups, byte for byte as `serde_json` writes
//! [`Finding`] and [`FindingGroup`] (compact, fields in order, optional ones left out when
//! absent), their shared strings (rule, reason, user agent, credential, action: one allocation
//! per distinct value, see the hunt's interner) escaped once per rendering thread and copied
//! after that: escaping them again for every finding was most of the rendering of a busy
//! trail's report.

use super::{Finding, FindingGroup};
use crate::hunt::fields::scan::plain_end;

/// Appends `s` as a JSON string, as `serde_json` writes it: quoted as is when nothing in it
/// needs an escape (serde escapes exactly `"`, `\` and control characters, the bytes
/// [`plain_end`] stops at), which is nearly always (locations, record ids), sixteen bytes per
/// step instead of serde's table lookup per byte.
fn put_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if plain_end(s.as_bytes(), 0) == s.len() {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return Ok(());
    }
    serde_json::to_writer(out, s)
}

/// Asks for the start of `s` to be brought into cache ahead of its use: a finding's location
/// and record id are strings of their own, allocated while the records were read and cold by
/// the time the report is written; their first load was most of writing them out.
pub(super) fn prefetch(s: &str) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address, and reads nothing
    // into the program; SSE (which provides it) is part of the x86-64 baseline.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(s.as_ptr().cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

/// Findings (or groups) ahead of the one being written whose strings are prefetched: enough
/// to cover a memory access's latency at the speed one is written.
pub(super) const PREFETCH_AHEAD: usize = 4;

/// Escaped JSON text of the strings findings share, by the address of their one allocation
/// (valid while the report is borrowed, as it is for the whole rendering).
#[derive(Default)]
pub(super) struct Texts {
    at: std::collections::HashMap<(usize, usize), (usize, usize), foldhash::fast::RandomState>,
    /// The last string seen per slot of a few, by address: (address, length, range in
    /// `text`). A finding has a dozen shared strings, most of them the previous finding's
    /// (its rule, reason, credential): found here by a shift and a compare, where the map
    /// hashed and probed for each (a tenth of rendering a report). Empty until first used.
    recent: Vec<(usize, usize, usize, usize)>,
    text: Vec<u8>,
}

/// Slots of [`Texts::recent`] (a power of two).
const RECENT: usize = 256;

/// Escaped text kept per thread; past it, the cache starts over (memory stays bounded whatever
/// the strings).
const TEXTS_BYTES: usize = 8 << 20;

impl Texts {
    /// Appends `s` as a JSON string.
    fn put(&mut self, out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
        // Two live strings at one address and of one length are the same bytes.
        let key = (s.as_ptr() as usize, s.len());
        // Allocations are 8-byte aligned at least: the bits above those tell them apart.
        let slot = (key.0 >> 3 ^ key.0 >> 11) & (RECENT - 1);
        if let Some(&(at, len, start, end)) = self.recent.get(slot)
            && (at, len) == key
        {
            out.extend_from_slice(&self.text[start..end]);
            return Ok(());
        }
        let (start, end) = match self.at.get(&key) {
            Some(&range) => range,
            None => {
                if self.text.len() > TEXTS_BYTES {
                    self.at.clear();
                    self.recent.clear();
                    self.text.clear();
                }
                let start = self.text.len();
                put_str(&mut self.text, s)?;
                self.at.insert(key, (start, self.text.len()));
                (start, self.text.len())
            }
        };
        if self.recent.is_empty() {
            self.recent = vec![(0, 0, 0, 0); RECENT];
        }
        self.recent[slot] = (key.0, key.1, start, end);
        out.extend_from_slice(&self.text[start..end]);
        Ok(())
    }

    /// Appends `s` as a JSON string, or `null`.
    fn put_opt(&mut self, out: &mut Vec<u8>, s: Option<&str>) -> serde_json::Result<()> {
        match s {
            Some(s) => self.put(out, s),
            None => {
                out.extend_from_slice(b"null");
                Ok(())
            }
        }
    }
}

/// A JSON object written field by field: `{"name":value,…}`.
struct Object<'o> {
    out: &'o mut Vec<u8>,
    texts: &'o mut Texts,
    empty: bool,
}

impl<'o> Object<'o> {
    fn new(out: &'o mut Vec<u8>, texts: &'o mut Texts) -> Object<'o> {
        Object {
            out,
            texts,
            empty: true,
        }
    }

    fn key(&mut self, name: &str) {
        self.out.push(if self.empty { b'{' } else { b',' });
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A shared string (see [`Texts`]), `null` when absent.
    fn shared(&mut self, name: &str, s: Option<&str>) -> serde_json::Result<&mut Self> {
        self.key(name);
        self.texts.put_opt(self.out, s)?;
        Ok(self)
    }

    /// A shared string, the field left out when absent.
    fn shared_if(&mut self, name: &str, s: Option<&str>) -> serde_json::Result<&mut Self> {
        match s {
            Some(s) => self.shared(name, Some(s)),
            None => Ok(self),
        }
    }

    /// A string of its own (not shared), as `serde_json` writes it.
    fn text(&mut self, name: &str, s: &str) -> serde_json::Result<&mut Self> {
        self.key(name);
        put_str(self.out, s)?;
        Ok(self)
    }

    /// A string of its own, the field left out when absent.
    fn text_if(&mut self, name: &str, s: Option<&str>) -> serde_json::Result<&mut Self> {
        match s {
            Some(s) => self.text(name, s),
            None => Ok(self),
        }
    }

    /// Any value, as `serde_json` writes it.
    fn value<T: serde::Serialize + ?Sized>(
        &mut self,
        name: &str,
        v: &T,
    ) -> serde_json::Result<&mut Self> {
        self.key(name);
        serde_json::to_writer(&mut *self.out, v)?;
        Ok(self)
    }

    fn time(
        &mut self,
        name: &str,
        t: &chrono::DateTime<chrono::Utc>,
    ) -> serde_json::Result<&mut Self> {
        self.key(name);
        super::time(t, &mut serde_json::Serializer::new(&mut *self.out))?;
        Ok(self)
    }

    fn end(&mut self) -> serde_json::Result<()> {
        self.out.push(b'}');
        Ok(())
    }
}

/// One finding as `serde_json` writes [`Finding`] (compact, its fields in order, the optional
/// ones left out when absent), the shared strings from `texts`.
pub(super) fn write_finding(
    out: &mut Vec<u8>,
    f: &Finding,
    texts: &mut Texts,
) -> serde_json::Result<()> {
    Object::new(out, texts)
        .shared("rule_id", Some(&f.rule_id))?
        .shared("rule", Some(&f.rule))?
        .shared_if("hunt", f.hunt.as_deref())?
        .value("severity", &f.severity)?
        .shared("severity_reason", Some(&f.severity_reason))?
        .shared_if("attack", f.attack.as_deref())?
        .value("source", &f.source)?
        .shared("credential", f.credential.as_deref())?
        .shared("principal", f.principal.as_deref())?
        .time("time", &f.time)?
        .shared("action", f.action.as_deref())?
        .shared("source_ip", f.source_ip.as_deref())?
        .shared("user_agent", f.user_agent.as_deref())?
        .shared("error", f.error.as_deref())?
        .text("location", &f.location)?
        .text_if("record_id", f.record_id.as_deref())?
        .text_if("detail", f.detail.as_deref())?
        .end()
}

/// One group as `serde_json` writes [`FindingGroup`], the shared strings from `texts`.
pub(super) fn write_group(
    out: &mut Vec<u8>,
    g: &FindingGroup<'_>,
    texts: &mut Texts,
) -> serde_json::Result<()> {
    Object::new(out, texts)
        .shared("credential", g.credential)?
        .shared("rule_id", Some(g.rule_id))?
        .shared("rule", Some(g.rule))?
        .shared_if("hunt", g.hunt)?
        .value("severity", &g.severity)?
        .shared("severity_reason", Some(g.severity_reason))?
        .shared("action", g.action)?
        .shared("source_ip", g.source_ip)?
        .value("count", &g.count)?
        .time("first", &g.first)?
        .time("last", &g.last)?
        .shared_if("attack", g.attack)?
        .text("location", g.location)?
        .text_if("detail", g.detail)?
        .end()
}

#[cfg(test)]
mod tests {
    use super::super::{Finding, HuntReport};
    use super::{Texts, write_finding, write_group};
    use crate::hunt::Severity;
    use crate::hunt::source::Source;
    use chrono::{TimeZone, Utc};

    /// Findings and groups with odd strings (quotes, backslashes, controls, U+2028, non-ASCII),
    /// absent fields and fractional or far times: the same bytes as `serde_json` writes.
    #[test]
    fn findings_and_groups_are_written_as_serde_writes_them() {
        let odd = [
            "plain",
            "a \"q\" \\ b",
            "\u{0}\u{1f}\t\n\r\u{7f}",
            "é\u{2028}☃",
            "",
        ];
        let base = Utc.with_ymd_and_hms(2023, 7, 10, 11, 42, 36).unwrap();
        let times = [
            base,
            base + chrono::Duration::milliseconds(250),
            Utc.with_ymd_and_hms(12345, 1, 2, 3, 4, 5).unwrap(),
        ];
        // Shared as the interner shares them: cached text is copied for the later ones.
        let shared: Vec<std::sync::Arc<str>> = odd.iter().map(|&s| s.into()).collect();
        let text = |i: usize| shared[i % shared.len()].clone();
        let findings: Vec<Finding> = (0..300)
            .map(|i| Finding {
                rule_id: text(i / 3),
                rule: text(i / 5),
                hunt: (i % 2 == 0).then(|| text(i)),
                severity: [Severity::Low, Severity::High][i % 2],
                severity_reason: text(i / 7),
                attack: (i % 3 == 0).then(|| text(i + 1)),
                source: [Source::Cloudtrail, Source::GcpLogging][i % 2],
                credential: (i % 4 != 0).then(|| text(i % 3)),
                principal: (i % 5 != 0).then(|| text(i + 2)),
                time: times[i % times.len()],
                action: (i % 6 != 0).then(|| text(i + 3)),
                source_ip: (i % 7 != 0).then(|| text(i + 4)),
                user_agent: (i % 2 == 1).then(|| text(i)),
                error: (i % 3 == 1).then(|| text(i)),
                location: format!("f{}.json (record {i})", odd[i % odd.len()]),
                record_id: (i % 4 == 1).then(|| format!("id-{i}")),
                detail: (i % 5 == 2).then(|| odd[i % odd.len()].to_string()),
            })
            .collect();
        let mut texts = Texts::default();
        for f in &findings {
            let mut mine = Vec::new();
            write_finding(&mut mine, f, &mut texts).unwrap();
            assert_eq!(
                String::from_utf8(mine).unwrap(),
                serde_json::to_string(f).unwrap()
            );
        }
        let mut report = HuntReport {
            findings,
            ..Default::default()
        };
        report.normalize();
        let groups = report.groups();
        assert!(groups.len() > 20, "{}", groups.len());
        for g in &groups {
            let mut mine = Vec::new();
            write_group(&mut mine, g, &mut texts).unwrap();
            assert_eq!(
                String::from_utf8(mine).unwrap(),
                serde_json::to_string(g).unwrap()
            );
        }
    }
}
