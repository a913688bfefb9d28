//! JSON text of findings and of their groups, byte for byte as `serde_json` writes
//! [`Finding`] and [`FindingGroup`] (compact, fields in order, optional ones left out when
//! absent), their shared strings (rule, reason, user agent, credential, action: one allocation
//! per distinct value, see the hunt's interner) escaped once per rendering thread and copied
//! after that: escaping them again for every finding was most of the rendering of a busy
//! trail's report.

use super::{Finding, FindingGroup};

/// Escaped JSON text of the strings findings share, by the address of their one allocation
/// (valid while the report is borrowed, as it is for the whole rendering).
#[derive(Default)]
pub(super) struct Texts {
    at: std::collections::HashMap<(usize, usize), (usize, usize), foldhash::fast::RandomState>,
    text: Vec<u8>,
}

/// Escaped text kept per thread; past it, the cache starts over (memory stays bounded whatever
/// the strings).
const TEXTS_BYTES: usize = 8 << 20;

impl Texts {
    /// Appends `s` as a JSON string.
    fn put(&mut self, out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
        // Two live strings at one address and of one length are the same bytes.
        let key = (s.as_ptr() as usize, s.len());
        let (start, end) = match self.at.get(&key) {
            Some(&range) => range,
            None => {
                if self.text.len() > TEXTS_BYTES {
                    self.at.clear();
                    self.text.clear();
                }
                let start = self.text.len();
                serde_json::to_writer(&mut self.text, s)?;
                self.at.insert(key, (start, self.text.len()));
                (start, self.text.len())
            }
        };
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

/// One finding as `serde_json` writes [`Finding`] (compact, its fields in order, the optional
/// ones left out when absent), the shared strings from `texts`.
pub(super) fn write_finding(
    out: &mut Vec<u8>,
    f: &Finding,
    texts: &mut Texts,
) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"rule_id\":");
    texts.put(out, &f.rule_id)?;
    out.extend_from_slice(b",\"rule\":");
    texts.put(out, &f.rule)?;
    if let Some(hunt) = &f.hunt {
        out.extend_from_slice(b",\"hunt\":");
        texts.put(out, hunt)?;
    }
    out.extend_from_slice(b",\"severity\":");
    serde_json::to_writer(&mut *out, &f.severity)?;
    out.extend_from_slice(b",\"severity_reason\":");
    texts.put(out, &f.severity_reason)?;
    if let Some(attack) = &f.attack {
        out.extend_from_slice(b",\"attack\":");
        texts.put(out, attack)?;
    }
    out.extend_from_slice(b",\"source\":");
    serde_json::to_writer(&mut *out, &f.source)?;
    out.extend_from_slice(b",\"credential\":");
    texts.put_opt(out, f.credential.as_deref())?;
    out.extend_from_slice(b",\"principal\":");
    texts.put_opt(out, f.principal.as_deref())?;
    out.extend_from_slice(b",\"time\":");
    super::time(&f.time, &mut serde_json::Serializer::new(&mut *out))?;
    out.extend_from_slice(b",\"action\":");
    texts.put_opt(out, f.action.as_deref())?;
    out.extend_from_slice(b",\"source_ip\":");
    texts.put_opt(out, f.source_ip.as_deref())?;
    out.extend_from_slice(b",\"user_agent\":");
    texts.put_opt(out, f.user_agent.as_deref())?;
    out.extend_from_slice(b",\"error\":");
    texts.put_opt(out, f.error.as_deref())?;
    out.extend_from_slice(b",\"location\":");
    serde_json::to_writer(&mut *out, &f.location)?;
    if let Some(id) = &f.record_id {
        out.extend_from_slice(b",\"record_id\":");
        serde_json::to_writer(&mut *out, id)?;
    }
    if let Some(detail) = &f.detail {
        out.extend_from_slice(b",\"detail\":");
        serde_json::to_writer(&mut *out, detail)?;
    }
    out.push(b'}');
    Ok(())
}

/// One group as `serde_json` writes [`FindingGroup`], the shared strings from `texts`.
pub(super) fn write_group(
    out: &mut Vec<u8>,
    g: &FindingGroup<'_>,
    texts: &mut Texts,
) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"credential\":");
    texts.put_opt(out, g.credential)?;
    out.extend_from_slice(b",\"rule_id\":");
    texts.put(out, g.rule_id)?;
    out.extend_from_slice(b",\"rule\":");
    texts.put(out, g.rule)?;
    if let Some(hunt) = g.hunt {
        out.extend_from_slice(b",\"hunt\":");
        texts.put(out, hunt)?;
    }
    out.extend_from_slice(b",\"severity\":");
    serde_json::to_writer(&mut *out, &g.severity)?;
    out.extend_from_slice(b",\"severity_reason\":");
    texts.put(out, g.severity_reason)?;
    out.extend_from_slice(b",\"action\":");
    texts.put_opt(out, g.action)?;
    out.extend_from_slice(b",\"source_ip\":");
    texts.put_opt(out, g.source_ip)?;
    out.extend_from_slice(b",\"count\":");
    serde_json::to_writer(&mut *out, &g.count)?;
    out.extend_from_slice(b",\"first\":");
    super::time(&g.first, &mut serde_json::Serializer::new(&mut *out))?;
    out.extend_from_slice(b",\"last\":");
    super::time(&g.last, &mut serde_json::Serializer::new(&mut *out))?;
    if let Some(attack) = g.attack {
        out.extend_from_slice(b",\"attack\":");
        texts.put(out, attack)?;
    }
    out.extend_from_slice(b",\"location\":");
    serde_json::to_writer(&mut *out, g.location)?;
    if let Some(detail) = g.detail {
        out.extend_from_slice(b",\"detail\":");
        serde_json::to_writer(&mut *out, detail)?;
    }
    out.push(b'}');
    Ok(())
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
