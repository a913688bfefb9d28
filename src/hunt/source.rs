//! Audit-log sources read from local files, as each platform writes them: what a source is
//! (its Sigma `logsource`, the community-to-raw field mapping, the fields that say who, when and
//! from where), and the streaming readers that turn files into records with their location.
//!
//! Memory: JSON lines and CSV are read one record at a time. A single JSON document (a GitHub
//! API page, a Graph `value` page) is read whole because its records borrow from the buffer;
//! a file whose first line is a wrapper document (a CloudTrail delivery `{"Records":[…]}`) is
//! read in parts as its records arrive ([`parts`]). Every record and document is bounded, and
//! so is what a gzip file may decompress to ([`super::bounded`]): memory follows the bound, not
//! the input, and an input over a bound ends with an error the hunt reports as not wholly read.

mod parts;

use super::bounded;
use super::fields::{Extracted, FieldId, FieldSet, Fields, Key, scan};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Cloudtrail,
    CircleciAudit,
    GithubAudit,
    GcpLogging,
    AzureSignins,
    AzureActivity,
}

pub const ALL_SOURCES: [Source; 6] = [
    Source::Cloudtrail,
    Source::CircleciAudit,
    Source::GithubAudit,
    Source::GcpLogging,
    Source::AzureSignins,
    Source::AzureActivity,
];

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Cloudtrail => "cloudtrail",
            Source::CircleciAudit => "circleci-audit",
            Source::GithubAudit => "github-audit",
            Source::GcpLogging => "gcp-logging",
            Source::AzureSignins => "azure-signins",
            Source::AzureActivity => "azure-activity",
        }
    }

    /// How late records typically arrive after the event: CloudTrail delivers within about 15
    /// minutes; CircleCI streams its audit log to S3 in batches; GitHub's, Cloud Logging's and
    /// Entra ID's logs lag by minutes, sign-ins sometimes longer, the Activity Log up to about
    /// 20 minutes. A plan overrides these
    /// (`hunts.delivery_delay`).
    pub fn typical_delivery_delay(self) -> chrono::Duration {
        chrono::Duration::minutes(match self {
            Source::Cloudtrail => 15,
            Source::CircleciAudit => 60,
            Source::GithubAudit => 10,
            Source::GcpLogging => 5,
            Source::AzureSignins => 30,
            Source::AzureActivity => 20,
        })
    }

    /// The source a Sigma `logsource` describes.
    pub fn for_logsource(product: &str, service: &str, _category: &str) -> Option<Source> {
        match (product, service) {
            ("aws", "cloudtrail") => Some(Source::Cloudtrail),
            ("circleci", "audit") => Some(Source::CircleciAudit),
            ("github", "audit") => Some(Source::GithubAudit),
            ("gcp", "gcp.audit") | ("gcp", "audit") => Some(Source::GcpLogging),
            ("azure", "signinlogs") | ("azure", "serviceprincipalsignins") => {
                Some(Source::AzureSignins)
            }
            ("azure", "activitylogs") => Some(Source::AzureActivity),
            _ => None,
        }
    }

    /// The raw path of a field named the way community Sigma rules name it. CloudTrail rules use
    /// the raw names already; GCP rules use the ECS-like `gcp.audit.*` names and Azure rules the
    /// Log Analytics column names, which differ from what the APIs return.
    pub fn map_field(self, name: &str) -> &str {
        match self {
            Source::GcpLogging => match name {
                "gcp.audit.method_name" => "protoPayload.methodName",
                "gcp.audit.service_name" => "protoPayload.serviceName",
                "gcp.audit.resource_name" => "protoPayload.resourceName",
                "gcp.audit.principal_email" => "protoPayload.authenticationInfo.principalEmail",
                "gcp.audit.status.code" => "protoPayload.status.code",
                "data.protoPayload.methodName" => "protoPayload.methodName",
                _ => name,
            },
            Source::AzureSignins => match name {
                "ResultType" => "status.errorCode",
                "ResultDescription" => "status.failureReason",
                "AppId" => "appId",
                "IPAddress" | "IpAddress" => "ipAddress",
                "ServicePrincipalId" => "servicePrincipalId",
                "ServicePrincipalName" => "servicePrincipalName",
                "Location" => "location.countryOrRegion",
                _ => name,
            },
            // Community rules are written against the Log Analytics / Event Hubs form, where
            // these are plain strings; the REST API (and its exports) nest them in `value`.
            Source::AzureActivity => match name {
                "operationName" | "OperationNameValue" | "OperationName" => "operationName.value",
                "status" | "ActivityStatusValue" | "ActivityStatus" => "status.value",
                "subStatus" | "ActivitySubstatusValue" => "subStatus.value",
                "Caller" => "caller",
                "CallerIpAddress" => "httpRequest.clientIpAddress",
                "ResourceProviderValue" => "resourceProviderName.value",
                "category" | "CategoryValue" => "category.value",
                "ResourceId" => "resourceId",
                _ => name,
            },
            _ => name,
        }
    }

    /// Keys of a wrapping document whose array holds this source's records.
    fn wrapper_keys(self) -> &'static [&'static str] {
        match self {
            Source::Cloudtrail => &["Records", "Events"],
            Source::GcpLogging => &["entries"],
            Source::AzureSignins | Source::AzureActivity => &["value"],
            Source::GithubAudit | Source::CircleciAudit => &[],
        }
    }

    /// Raw paths of who, when and from where, in order of preference.
    fn core_paths(self) -> CorePaths {
        match self {
            Source::Cloudtrail => CorePaths {
                time: &["eventTime"],
                ip: &["sourceIPAddress"],
                ua: &["userAgent"],
                credential: &["userIdentity.accessKeyId"],
                principal: &["userIdentity.arn", "userIdentity.invokedBy"],
                action: &["eventName"],
                id: &["eventID"],
                country: &[],
                error: &["errorCode"],
            },
            Source::CircleciAudit => CorePaths {
                time: &["occurred_at"],
                ip: &["request.ip_address", "metadata.ip_address"],
                ua: &["request.user_agent", "metadata.user_agent"],
                credential: &["actor.name", "actor.id"],
                principal: &["actor.name", "actor.id"],
                action: &["action"],
                id: &["id"],
                country: &[],
                error: &["success"],
            },
            Source::GithubAudit => CorePaths {
                time: &["@timestamp", "created_at"],
                ip: &["actor_ip"],
                ua: &["user_agent"],
                credential: &["hashed_token", "actor"],
                principal: &["actor"],
                action: &["action"],
                id: &["_document_id"],
                country: &["actor_location.country_code"],
                error: &[],
            },
            Source::GcpLogging => CorePaths {
                time: &["timestamp"],
                ip: &["protoPayload.requestMetadata.callerIp"],
                ua: &["protoPayload.requestMetadata.callerSuppliedUserAgent"],
                credential: &[
                    "protoPayload.authenticationInfo.serviceAccountKeyName",
                    "protoPayload.authenticationInfo.principalEmail",
                ],
                principal: &["protoPayload.authenticationInfo.principalEmail"],
                action: &["protoPayload.methodName"],
                id: &["insertId"],
                country: &[],
                error: &["protoPayload.status.code"],
            },
            Source::AzureSignins => CorePaths {
                time: &["createdDateTime"],
                ip: &["ipAddress"],
                ua: &["userAgent"],
                credential: &["servicePrincipalCredentialKeyId", "appId"],
                principal: &["servicePrincipalName", "appDisplayName", "appId"],
                action: &["resourceDisplayName"],
                id: &["id"],
                country: &["location.countryOrRegion"],
                error: &["status.errorCode"],
            },
            // Activity Log events as the REST API returns them (`value` pages) and as the
            // portal's JSON export saves them.
            Source::AzureActivity => CorePaths {
                time: &["eventTimestamp"],
                ip: &["httpRequest.clientIpAddress", "claims.ipaddr"],
                ua: &[],
                // The caller: a user's UPN or a service principal's object id; scoping by the
                // application (client) id goes through `claims.appid`.
                credential: &["caller"],
                principal: &["claims.appid", "caller"],
                action: &["operationName.value"],
                id: &["eventDataId"],
                country: &[],
                error: &["subStatus.value", "status.value"],
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

struct CorePaths {
    time: &'static [&'static str],
    ip: &'static [&'static str],
    ua: &'static [&'static str],
    credential: &'static [&'static str],
    principal: &'static [&'static str],
    action: &'static [&'static str],
    id: &'static [&'static str],
    country: &'static [&'static str],
    error: &'static [&'static str],
}

/// Field ids of who, when and from where, each a list of fallbacks.
#[derive(Debug, Clone, Default)]
pub struct Core {
    pub time: Vec<FieldId>,
    pub ip: Vec<FieldId>,
    pub ua: Vec<FieldId>,
    pub credential: Vec<FieldId>,
    pub principal: Vec<FieldId>,
    pub action: Vec<FieldId>,
    pub id: Vec<FieldId>,
    pub country: Vec<FieldId>,
    pub error: Vec<FieldId>,
}

/// The first present value among `ids`.
pub fn first<'f>(f: &'f Fields<'_>, ids: &[FieldId]) -> Option<&'f str> {
    ids.iter()
        .filter_map(|&i| f.get(i))
        .filter(|v| v.is_present())
        .find_map(|v| v.as_str())
        .filter(|s| !s.is_empty())
}

/// A record's time as its source writes it.
pub fn parse_time(source: Source, s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if source == Source::GithubAudit && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        // GitHub's @timestamp: epoch milliseconds.
        return s
            .parse::<i64>()
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis);
    }
    utc_seconds(s).or_else(|| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form CloudTrail writes every `eventTime` in, read directly:
/// RFC 3339's general parser was a visible part of every record's cost. `None` for any other
/// text, which the general parser then reads (so a value reads the same either way).
fn utc_seconds(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let b: &[u8; 20] = s.as_bytes().try_into().ok()?;
    let num = |at: usize, len: usize| -> Option<u32> {
        b.get(at..at + len)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'Z'),
    ]
    .iter()
    .any(|&(i, c)| b[i] != c)
    {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 2)?, num(8, 2)?)?;
    Some(
        date.and_hms_opt(num(11, 2)?, num(14, 2)?, num(17, 2)?)?
            .and_utc(),
    )
}

/// One [`FieldSet`] and [`Core`] per source; rules intern their fields here.
#[derive(Debug, Clone)]
pub struct FieldSets {
    sets: Vec<FieldSet>,
    cores: Vec<Core>,
}

impl Default for FieldSets {
    fn default() -> Self {
        Self::new()
    }
}

impl FieldSets {
    pub fn new() -> Self {
        let mut sets = Vec::new();
        let mut cores = Vec::new();
        for s in ALL_SOURCES {
            let mut set = FieldSet::default();
            let p = s.core_paths();
            let mut ids = |paths: &[&str]| paths.iter().map(|p| set.intern(p)).collect::<Vec<_>>();
            let core = Core {
                time: ids(p.time),
                ip: ids(p.ip),
                ua: ids(p.ua),
                credential: ids(p.credential),
                principal: ids(p.principal),
                action: ids(p.action),
                id: ids(p.id),
                country: ids(p.country),
                error: ids(p.error),
            };
            sets.push(set);
            cores.push(core);
        }
        FieldSets { sets, cores }
    }

    fn index(source: Source) -> usize {
        ALL_SOURCES.iter().position(|s| *s == source).unwrap_or(0)
    }

    pub fn for_source(&mut self, source: Source) -> &mut FieldSet {
        &mut self.sets[Self::index(source)]
    }

    pub fn set(&self, source: Source) -> &FieldSet {
        &self.sets[Self::index(source)]
    }

    pub fn core(&self, source: Source) -> &Core {
        &self.cores[Self::index(source)]
    }
}

/// Where a record is: the file, its line (0 inside a JSON document spread over lines, but for
/// the records wholly on its first line) and its 1-based number among the file's records.
#[derive(Debug, Clone, Copy)]
pub struct Loc<'a> {
    pub file: &'a str,
    pub line: u64,
    pub index: u64,
}

impl Loc<'_> {
    /// The location as text, as [`fmt::Display`] writes it, in one allocation: every finding
    /// keeps one, and a `String` grown by the formatter was four reallocations each.
    pub fn text(&self) -> String {
        use fmt::Write as _;
        // The path, two numbers of up to 20 digits and the words around them.
        let mut out = String::with_capacity(self.file.len() + 56);
        let _ = write!(out, "{self}");
        out
    }
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{} (record {})", self.file, self.line, self.index)
        } else {
            write!(f, "{} (record {})", self.file, self.index)
        }
    }
}

/// A record that could not be read, and why; it was skipped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub location: String,
    pub message: String,
}

/// Receives every record read, with its location.
pub trait Sink {
    fn record(&mut self, loc: Loc<'_>, fields: &Fields<'_>);
    fn problem(&mut self, problem: Problem);
}

/// The files a path names: itself, or every file below it (sorted, hidden files skipped);
/// for CloudTrail only `.json` and `.json.gz` files inside directories.
pub fn expand(source: Source, path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in entries {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    // Digest files prove integrity; they hold no events.
                    if source == Source::Cloudtrail && name == "CloudTrail-Digest" {
                        continue;
                    }
                    stack.push(p);
                } else if source != Source::Cloudtrail
                    || name.ends_with(".json")
                    || name.ends_with(".json.gz")
                {
                    out.push(p);
                }
            }
        }
        out.sort();
    } else {
        // A missing file is an error the caller reports; metadata tells it early.
        std::fs::metadata(path)?;
        out.push(path.to_path_buf());
    }
    Ok(out)
}

/// Wraps a reader, decompressing gzip (by magic number, whatever the name).
fn decompressing<'r>(mut inner: impl Read + 'r) -> std::io::Result<Box<dyn BufRead + 'r>> {
    let mut magic = [0u8; 2];
    let mut n = 0;
    // A short read is not the end: fill both bytes unless the input is shorter.
    while n < 2 {
        match inner.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let chained = head.chain(inner);
    const BUF: usize = 256 * 1024;
    if n == 2 && magic == [0x1f, 0x8b] {
        // The bound is on what comes out: a bomb is small on disk.
        Ok(Box::new(BufReader::with_capacity(
            BUF,
            bounded::Capped::new(
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(BUF, chained)),
                bounded::MAX_DECOMPRESSED,
            ),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(BUF, chained)))
    }
}

/// Reads every record of one file into `sink`. I/O errors end the file (returned); malformed
/// records are reported to the sink and skipped.
pub fn read_file(
    source: Source,
    path: &Path,
    set: &FieldSet,
    sink: &mut dyn Sink,
) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata().map_or(0, |m| m.len());
    let name = path.display().to_string();
    read_rereadable(source, &name, file, size, set, sink, parts::PART)
}

/// [`read_sized`] for an input that can be read again from its start (a file, gzip or not):
/// when it is larger than a part, a wrapper document on its first line is read in parts of
/// `part` bytes (see [`parts`]); where that stops, the whole line's path reads the input again,
/// skipping the records already handed over.
fn read_rereadable(
    source: Source,
    name: &str,
    mut input: impl Read + Seek,
    size: u64,
    set: &FieldSet,
    sink: &mut dyn Sink,
    part: usize,
) -> std::io::Result<()> {
    // Within the record bound, a line the whole path would refuse is never read in parts.
    let by_parts = size > part as u64
        && size <= bounded::MAX_RECORD as u64
        && !source.wrapper_keys().is_empty();
    if by_parts {
        // A `.json.gz` delivery is read in parts as it is decompressed.
        let outcome = parts::read(
            source,
            name,
            &mut decompressing(&mut input)?,
            set,
            sink,
            part,
        )?;
        match outcome {
            parts::Outcome::Whole => return Ok(()),
            parts::Outcome::Handed(records) => {
                input.seek(SeekFrom::Start(0))?;
                let mut sink = Skip {
                    inner: sink,
                    records,
                };
                return read_sized(source, name, input, size, set, &mut sink);
            }
        }
    }
    read_sized(source, name, input, size, set, sink)
}

/// Reads every record of one input — a file, or a page fetched from an API (see
/// [`super::remote`]) — named `name` in locations. Gzip is recognised by its magic number.
pub fn read_from(
    source: Source,
    name: &str,
    input: impl Read,
    set: &FieldSet,
    sink: &mut dyn Sink,
) -> std::io::Result<()> {
    read_sized(source, name, input, 0, set, sink)
}

/// [`read_from`] with the input's size in bytes when known (0: unknown), a hint only: the
/// line buffer is sized for it at once.
fn read_sized(
    source: Source,
    name: &str,
    input: impl Read,
    size: u64,
    set: &FieldSet,
    sink: &mut dyn Sink,
) -> std::io::Result<()> {
    let mut reader = decompressing(input)?;
    let is_csv = source == Source::CircleciAudit && {
        let head = reader.fill_buf()?;
        let first = head.iter().copied().find(|b| !b.is_ascii_whitespace());
        !matches!(first, Some(b'{') | Some(b'['))
    };
    if is_csv {
        return read_csv(name, reader, set, sink);
    }
    read_json(source, name, reader, size, set, sink)
}

fn read_json(
    source: Source,
    name: &str,
    mut reader: Box<dyn BufRead + '_>,
    size: u64,
    set: &FieldSet,
    sink: &mut dyn Sink,
) -> std::io::Result<()> {
    // The worker's line buffer, kept from file to file: a CloudTrail delivery is one line of
    // megabytes, and a fresh buffer per file grew by copies and page faults (a tenth of a
    // hunt). Kept only up to a bound, so an outsized record's buffer is freed after its file.
    const KEEP: usize = 32 << 20;
    thread_local! {
        static LINE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut line = LINE.with(std::cell::Cell::take);
    // Sized for the whole input at once (a delivery is one line), up to what is kept: grown
    // by doubling from empty, the buffer was copied and first touched twice over.
    let want = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .saturating_add(1)
        .min(KEEP);
    // Size 0 is unknown (a page, a pipe): the buffer grows as before.
    if size > 0 && line.capacity() < want {
        // What it holds is never handed out again: a fresh buffer, nothing copied. With an
        // eighth to spare: a trail's deliveries differ by a few bytes, and a buffer made to
        // measure was made again (its memory faulted in afresh) for every larger one.
        line = Vec::with_capacity(want.saturating_add(want / 8).min(KEEP));
    }
    let mut lines = bounded::Lines::new(&mut reader, line, bounded::MAX_RECORD);
    let result = read_json_lines(source, name, &mut lines, set, sink);
    let line = lines.into_buffer();
    if line.capacity() <= KEEP {
        LINE.with(|l| l.set(line));
    }
    result
}

fn read_json_lines(
    source: Source,
    name: &str,
    lines: &mut bounded::Lines<'_>,
    set: &FieldSet,
    sink: &mut dyn Sink,
) -> std::io::Result<()> {
    let mut line_no = 0u64;
    let mut index = 0u64;
    let mut first = true;
    while let Some(range) = lines.next_line()? {
        line_no += 1;
        let bytes = lines.get(range.clone());
        let (text, cut) = match simdutf8::basic::from_utf8(bytes) {
            Ok(text) => (text, false),
            Err(_) => {
                // The records before the first byte that is not UTF-8 are read (as a reader
                // in parts reads them, see `parts`), the rest of the line is skipped.
                let valid = simdutf8::compat::from_utf8(bytes)
                    .map_or_else(|e| e.valid_up_to(), |t| t.len());
                sink.problem(Problem {
                    location: format!("{name}:{line_no}:{}", valid + 1),
                    message: "not UTF-8 text; the rest of the line skipped".into(),
                });
                first = false;
                let prefix = bytes.get(..valid).unwrap_or_default();
                (std::str::from_utf8(prefix).unwrap_or_default(), true)
            }
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            continue;
        }
        if first {
            first = false;
            // A pretty-printed document does not hold a whole value on its first line: read
            // the rest and parse it as one document (bounded like a record: its records borrow
            // from it).
            // (A whole value never ends its first line with an opening bracket or a comma; the
            // check must stay cheap: a CloudTrail delivery is one multi-megabyte line.)
            if trimmed.ends_with('[') || trimmed.ends_with(',') || trimmed.ends_with('{') {
                let all = lines.rest(range)?;
                let Ok(doc) = simdutf8::basic::from_utf8(lines.get(all)) else {
                    sink.problem(Problem {
                        location: name.to_string(),
                        message: "not UTF-8 text".into(),
                    });
                    return Ok(());
                };
                parse_doc(source, name, doc, line_no, 0, false, &mut index, set, sink);
                return Ok(());
            }
        }
        parse_doc(
            source, name, trimmed, line_no, line_no, cut, &mut index, set, sink,
        );
    }
    Ok(())
}

/// Parses one JSON text (a line or a whole document) holding records, a wrapper of records, or
/// an array of records. `first_line` is the text's first line in the file (for error positions);
/// `loc_line` is the line reported for its records (0 when they span lines). `cut`: the text
/// is a line's start, cut where bytes that are not UTF-8 begin (reported already): its
/// unexpected end is not reported again.
#[allow(clippy::too_many_arguments)]
fn parse_doc(
    source: Source,
    name: &str,
    text: &str,
    first_line: u64,
    loc_line: u64,
    cut: bool,
    index: &mut u64,
    set: &FieldSet,
    sink: &mut dyn Sink,
) {
    // The fast path first; where it stops (malformed or unusual text), serde reads the
    // document again from the start and reports what it finds, skipping the records the fast
    // path already handed over (it accepts nothing serde refuses, see `fields::scan`).
    let first_index = *index;
    let mut handed = 0u64;
    // A document spread over lines: its records wholly on its first line are located there,
    // as a reader in parts (see `parts`) locates them before it sees the line's end.
    let first_line_end = if loc_line == 0 {
        memchr::memchr(b'\n', text.as_bytes())
    } else {
        None
    };
    let fast = scan::scan_doc(text, set, source.wrapper_keys(), &mut |fields, end| {
        *index += 1;
        handed += 1;
        let line = match first_line_end {
            Some(newline) if end <= newline => first_line,
            _ => loc_line,
        };
        sink.record(
            Loc {
                file: name,
                line,
                index: *index,
            },
            fields,
        );
    });
    if fast.is_ok() {
        return;
    }
    *index = first_index;
    let mut sink = Skip {
        inner: sink,
        records: handed,
    };
    let sink: &mut dyn Sink = &mut sink;
    let mut de = serde_json::Deserializer::from_str(text);
    let result = de::Deserializer::deserialize_any(
        &mut de,
        DocVisitor {
            source,
            set,
            name,
            line: loc_line,
            index,
            sink: &mut *sink,
        },
    )
    .and_then(|()| de.end());
    if let Err(e) = result
        && !(cut && e.is_eof())
    {
        let line = first_line + e.line() as u64 - 1;
        let loc = if loc_line > 0 {
            format!("{name}:{loc_line}:{}", e.column())
        } else {
            format!("{name}:{line}:{}", e.column())
        };
        let full = e.to_string();
        let message = full.split(" at line ").next().unwrap_or(&full).to_string();
        sink.problem(Problem {
            location: loc,
            message: if loc_line > 0 {
                format!("malformed JSON line skipped: {message}")
            } else {
                format!("malformed JSON, the rest of the document skipped: {message}")
            },
        });
    }
}

/// A sink that drops the first `records` records (already handed over by the fast path).
struct Skip<'s> {
    inner: &'s mut dyn Sink,
    records: u64,
}

impl Sink for Skip<'_> {
    fn record(&mut self, loc: Loc<'_>, fields: &Fields<'_>) {
        if self.records > 0 {
            self.records -= 1;
        } else {
            self.inner.record(loc, fields);
        }
    }

    fn problem(&mut self, problem: Problem) {
        self.inner.problem(problem);
    }
}

struct DocVisitor<'a, 's> {
    source: Source,
    set: &'a FieldSet,
    name: &'a str,
    line: u64,
    index: &'a mut u64,
    sink: &'s mut dyn Sink,
}

impl<'de> Visitor<'de> for DocVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an audit record, an array of records, or a page of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let DocVisitor {
            source,
            set,
            name,
            line,
            index,
            sink,
        } = self;
        while seq
            .next_element_seed(ElementSeed {
                source,
                set,
                name,
                line,
                index: &mut *index,
                sink: &mut *sink,
                lookup: false,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let DocVisitor {
            source,
            set,
            name,
            line,
            index,
            sink,
        } = self;
        // Either a wrapper ({"Records": […]}, {"value": […]}, …) or one record: the fields are
        // extracted as for a record and dropped when a wrapper key was found.
        let mut wrapped = false;
        let mut fields = set.empty();
        let mut map = map;
        let wrappers = source.wrapper_keys();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if wrappers.contains(&key.0.as_ref()) {
                wrapped = true;
                let lookup = key.0 == "Events";
                map.next_value_seed(ArraySeed {
                    inner: ElementSeed {
                        source,
                        set,
                        name,
                        line,
                        index: &mut *index,
                        sink: &mut *sink,
                        lookup,
                    },
                })?;
            } else {
                set.next_value_into(&key.0, &mut map, &mut fields)?;
            }
        }
        if !wrapped {
            *index += 1;
            sink.record(
                Loc {
                    file: name,
                    line,
                    index: *index,
                },
                &fields,
            );
        }
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.not_a_record("a string");
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.not_a_record("a boolean");
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.not_a_record("a number");
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.not_a_record("a number");
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.not_a_record("a number");
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.not_a_record("null");
        Ok(())
    }
}

impl DocVisitor<'_, '_> {
    fn not_a_record(self, kind: &str) {
        *self.index += 1;
        let loc = Loc {
            file: self.name,
            line: self.line,
            index: *self.index,
        };
        self.sink.problem(Problem {
            location: loc.to_string(),
            message: format!("expected a record (a JSON object), found {kind}; skipped"),
        });
    }
}

struct ArraySeed<'a, 's> {
    inner: ElementSeed<'a, 's>,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ElementSeed {
            source,
            set,
            name,
            line,
            index,
            sink,
            lookup,
        } = self.inner;
        while seq
            .next_element_seed(ElementSeed {
                source,
                set,
                name,
                line,
                index: &mut *index,
                sink: &mut *sink,
                lookup,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// One element of an array of records. With `lookup`, the element is a LookupEvents event
/// whose record is the JSON text in `CloudTrailEvent`.
struct ElementSeed<'a, 's> {
    source: Source,
    set: &'a FieldSet,
    name: &'a str,
    line: u64,
    index: &'a mut u64,
    sink: &'s mut dyn Sink,
    lookup: bool,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        *self.index += 1;
        let loc = Loc {
            file: self.name,
            line: self.line,
            index: *self.index,
        };
        if self.lookup {
            #[derive(serde::Deserialize)]
            struct LookupEvent {
                #[serde(rename = "CloudTrailEvent")]
                cloudtrail_event: Option<String>,
            }
            let ev: LookupEvent = de::Deserialize::deserialize(d)?;
            let Some(text) = ev.cloudtrail_event else {
                self.sink.problem(Problem {
                    location: loc.to_string(),
                    message: "LookupEvents event without CloudTrailEvent; skipped".into(),
                });
                return Ok(());
            };
            let mut inner = serde_json::Deserializer::from_str(&text);
            match self.set.seed().deserialize(&mut inner) {
                Ok(Extracted::Record(f)) => self.sink.record(loc, &f),
                Ok(Extracted::NotAnObject(kind)) => self.sink.problem(Problem {
                    location: loc.to_string(),
                    message: format!("CloudTrailEvent is {kind}, not a record; skipped"),
                }),
                Err(e) => self.sink.problem(Problem {
                    location: loc.to_string(),
                    message: format!("CloudTrailEvent is not JSON ({e}); skipped"),
                }),
            }
            return Ok(());
        }
        match self.set.seed().deserialize(d)? {
            Extracted::Record(f) => self.sink.record(loc, &f),
            Extracted::NotAnObject(kind) => self.sink.problem(Problem {
                location: loc.to_string(),
                message: format!("expected a record (a JSON object), found {kind}; skipped"),
            }),
        }
        Ok(())
    }
}

/// CircleCI's CSV export: one row per event, nested columns hold JSON. Each row is rebuilt as
/// the JSON object the streaming export would carry, then read like any record.
fn read_csv(
    name: &str,
    reader: Box<dyn BufRead + '_>,
    set: &FieldSet,
    sink: &mut dyn Sink,
) -> std::io::Result<()> {
    // The CSV reader buffers a row itself: the budget bounds what one row may read.
    let (reader, row_start) = bounded::RecordBudget::new(reader, bounded::MAX_RECORD);
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers = match csv.headers() {
        Ok(h) => h.clone(),
        Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => return Err(csv_io(e)),
        Err(e) => {
            sink.problem(Problem {
                location: name.to_string(),
                message: format!("unreadable CSV header: {e}"),
            });
            return Ok(());
        }
    };
    let mut row = csv::StringRecord::new();
    let mut json = String::new();
    let mut index = 0u64;
    loop {
        let line = csv.position().line() + 1;
        row_start.mark();
        match csv.read_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                if let csv::ErrorKind::Io(_) = e.kind() {
                    return Err(csv_io(e));
                }
                index += 1;
                sink.problem(Problem {
                    location: format!("{name}:{line}"),
                    message: format!("unreadable CSV row: {e}; skipped"),
                });
                continue;
            }
        }
        index += 1;
        let line = row.position().map(|p| p.line()).unwrap_or(line);
        let loc = Loc {
            file: name,
            line,
            index,
        };
        if row.len() != headers.len() {
            sink.problem(Problem {
                location: loc.to_string(),
                message: format!(
                    "{} cells, the header has {}; skipped",
                    row.len(),
                    headers.len()
                ),
            });
            continue;
        }
        json.clear();
        json.push('{');
        let mut broken = None;
        for (i, (h, cell)) in headers.iter().zip(row.iter()).enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&serde_json::to_string(h).unwrap_or_default());
            json.push(':');
            let c = cell.trim();
            if c.starts_with('{') || c.starts_with('[') {
                if let Err(e) = serde_json::from_str::<IgnoredAny>(c) {
                    broken = Some(format!("column `{h}` holds broken JSON ({e})"));
                    break;
                }
                json.push_str(c);
            } else if c == "true" || c == "false" {
                json.push_str(c);
            } else if c.is_empty() {
                json.push_str("null");
            } else {
                json.push_str(&serde_json::to_string(cell).unwrap_or_default());
            }
        }
        json.push('}');
        if let Some(message) = broken {
            sink.problem(Problem {
                location: loc.to_string(),
                message: format!("{message}; skipped"),
            });
            continue;
        }
        match set
            .seed()
            .deserialize(&mut serde_json::Deserializer::from_str(&json))
        {
            Ok(Extracted::Record(f)) => sink.record(loc, &f),
            _ => sink.problem(Problem {
                location: loc.to_string(),
                message: "row could not be read as a record; skipped".into(),
            }),
        }
    }
}

/// The I/O error inside a CSV error, kept whole (an [`bounded::OverLimit`] stays one).
fn csv_io(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct reading of `YYYY-MM-DDTHH:MM:SSZ` gives what RFC 3339's parser gives, on
    /// valid times, impossible dates, leap seconds and near misses of the form.
    #[test]
    fn times_read_directly_read_as_rfc3339_reads_them() {
        let general = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        let mut direct = 0;
        let mut texts: Vec<String> = [
            "2023-07-10T11:42:36Z",
            "2024-02-29T23:59:59Z",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-07-10T24:00:00Z",
            "2023-07-10T11:60:00Z",
            "2016-12-31T23:59:60Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2023-07-10t11:42:36z",
            "2023-07-10 11:42:36Z",
            "2023-07-10T11:42:36+00:00",
            "2023-07-10T11:42:36.5Z",
            "2023-07-1OT11:42:36Z",
            "+023-07-10T11:42:36Z",
            "2023-07-10T11:42:3Z",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = *b"2023-07-10T11:42:36Z";
            let at = (seed % 20) as usize;
            b[at] = b"0123456789-:TZ+ x"[(seed >> 8) as usize % 17];
            texts.push(String::from_utf8_lossy(&b).into_owned());
        }
        for t in &texts {
            assert_eq!(parse_time(Source::Cloudtrail, t), general(t), "{t}");
            direct += usize::from(utc_seconds(t).is_some());
        }
        assert!(direct > 5_000, "{direct}");
    }

    #[derive(Default, Debug, PartialEq)]
    struct Seen {
        records: Vec<(u64, Option<String>)>,
        locations: Vec<String>,
        problems: Vec<Problem>,
    }

    impl Sink for Seen {
        fn record(&mut self, loc: Loc<'_>, f: &Fields<'_>) {
            let name = f.first().and_then(|v| v.as_str()).map(str::to_string);
            self.records.push((loc.index, name));
            self.locations.push(loc.text());
        }
        fn problem(&mut self, problem: Problem) {
            self.problems.push(problem);
        }
    }

    fn read(text: &str) -> Seen {
        read_whole(text.as_bytes())
    }

    fn fields() -> FieldSet {
        let mut set = FieldSet::default();
        set.intern("eventName");
        set.intern("n.v");
        set
    }

    /// Read as an input that cannot be read again (a page): its lines whole.
    fn read_whole(bytes: &[u8]) -> Seen {
        let mut seen = Seen::default();
        read_from(Source::Cloudtrail, "t.json", bytes, &fields(), &mut seen).unwrap();
        seen
    }

    /// Read as a file is: in parts of `part` bytes when larger.
    fn read_in_parts(bytes: &[u8], part: usize) -> Seen {
        let mut seen = Seen::default();
        let input = std::io::Cursor::new(bytes);
        let size = bytes.len() as u64;
        read_rereadable(
            Source::Cloudtrail,
            "t.json",
            input,
            size,
            &fields(),
            &mut seen,
            part,
        )
        .unwrap();
        seen
    }

    /// Bytes that are not UTF-8 end their line, not the records before them: those are read,
    /// and one problem names the first such byte. A document spread over lines after blank
    /// lines: its faults are located on the file's lines, its records on its first line there.
    #[test]
    fn bytes_not_utf8_end_the_line_and_faults_are_located_on_the_files_lines() {
        let seen = read_whole(b"{\"Records\":[{\"eventName\":\"A\"},{\"eventName\":\"B\xff\"}]}\n{\"eventName\":\"C\"}");
        // (The cut record has its number, as a malformed one has.)
        assert_eq!(
            seen.records,
            vec![(1, Some("A".into())), (3, Some("C".into()))]
        );
        assert_eq!(
            seen.problems,
            vec![Problem {
                location: "t.json:1:46".into(),
                message: "not UTF-8 text; the rest of the line skipped".into(),
            }]
        );
        let seen = read("\n\n{\"Records\":[{\"eventName\":\"A\"},\n{\"eventName\":tru}]}");
        assert_eq!(seen.locations, vec!["t.json:3 (record 1)".to_string()]);
        assert_eq!(seen.problems.len(), 1, "{:?}", seen.problems);
        assert!(
            seen.problems[0].location.starts_with("t.json:4:"),
            "{:?}",
            seen.problems
        );
    }

    /// Deliveries, well formed and not: records of every size with escapes and characters of
    /// two to four bytes (cut by parts anywhere), faults of every kind at every place, other
    /// shapes of document, more lines after the first, bytes that are not UTF-8, newlines in
    /// the middle: read in parts of any size, a file hands over the same records with the same
    /// locations, and the same problems, as its lines read whole.
    #[test]
    fn a_file_read_in_parts_reads_as_its_lines_read_whole() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let pieces = ["a", "é", "☃", "😀", "\\\"", "\\\\", "\\u00e9", " ", "x1"];
        let record = |i: usize, next: &mut dyn FnMut(usize) -> usize| {
            let pad: String = (0..next(120)).map(|_| pieces[next(pieces.len())]).collect();
            format!(
                r#"{{"eventName":"E{i}","n":{{"v":[{i},"w{i}"],"u":null}},"pad":"{pad}","t":true}}"#
            )
        };
        let mut docs: Vec<Vec<u8>> = Vec::new();
        for round in 0..60 {
            let n = 1 + next(12);
            let records: Vec<String> = (0..n).map(|i| record(i, &mut next)).collect();
            let body = records.join(",");
            let shapes = [
                format!(r#"{{"Records":[{body}]}}"#),
                format!(r#"  {{ "Records" : [ {body} ] }}  "#),
                format!(r#"{{"Rec\u006frds":[{body}]}}"#),
                format!(r#"{{"Records":[{body}],"more":1}}"#),
                format!(r#"{{"x":1,"Records":[{body}]}}"#),
                format!(r#"{{"Records":[{body},]}}"#),
                format!(r#"{{"Records":[{body},5]}}"#),
                format!(r#"{{"Records":[{body}]}}"#).replacen("true", "tru", 1 + next(2)),
                format!(r#"{{"Events":[{body}]}}"#),
                r#"{"Records":[]}"#.to_string(),
                "{}".to_string(),
                format!(r#"{{"Records":5,"x":[{body}]}}"#),
                format!("[{body}]"),
            ];
            let doc = &shapes[round % shapes.len()];
            let tails = [
                "",
                "\n",
                "\r\n",
                "\n\n \n",
                "\n{\"Records\":[{\"eventName\":\"L2\"}]}\n",
                " x",
                "\u{3000}",
                "\n\u{3000}\n",
            ];
            let mut bytes = doc.clone().into_bytes();
            bytes.extend_from_slice(tails[next(tails.len())].as_bytes());
            docs.push(bytes.clone());
            // The same cut short, with a byte that is not UTF-8, with a newline, at any place.
            let at = next(bytes.len() + 1);
            docs.push(bytes[..at].to_vec());
            for insert in [&b"\xff"[..], b"\n", b"\xe2\x98"] {
                let mut b = bytes.clone();
                let at = next(b.len() + 1);
                b.splice(at..at, insert.iter().copied());
                docs.push(b);
            }
        }
        // A document spread over lines, records on its first line.
        docs.push(b"{\"Records\":[{\"eventName\":\"A\"},{\"eventName\":\"B\"},\n{\"eventName\":\"C\"}]}\n".to_vec());
        docs.push(
            b"\n\n{\"Records\":[\n{\"eventName\":\"A\"},\n{\"eventName\":\"B\"}\n]}".to_vec(),
        );
        let mut parted = 0;
        for (i, doc) in docs.iter().enumerate() {
            let whole = read_whole(doc);
            for part in [1, 2, 3, 7, 16, 61, 256, 1 << 20] {
                let parts = read_in_parts(doc, part);
                assert_eq!(
                    parts,
                    whole,
                    "parts of {part} bytes: {}",
                    String::from_utf8_lossy(doc)
                );
                parted += usize::from(doc.len() > part);
            }
            // Gzip, read in parts as it is decompressed: as its lines read whole.
            if i % 3 == 0 {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                std::io::Write::write_all(&mut gz, doc).unwrap();
                let gz = gz.finish().unwrap();
                for part in [1, 7, 61] {
                    let parts = read_in_parts(&gz, part);
                    assert_eq!(parts, whole, "gzip, parts of {part} bytes");
                    parted += usize::from(gz.len() > part);
                }
            }
        }
        assert!(parted > 1500, "{parted}");
    }

    /// Where the fast path stops inside a document, serde reads it again: the records before
    /// the fault are handed over once, with their numbers, and the fault is serde's problem.
    #[test]
    fn a_fault_after_good_records_hands_each_record_over_once() {
        let seen = read(r#"{"Records":[{"eventName":"A"},{"eventName":"B"},{"eventName":tru}]}"#);
        assert_eq!(
            seen.records,
            vec![(1, Some("A".into())), (2, Some("B".into()))]
        );
        assert_eq!(seen.problems.len(), 1, "{:?}", seen.problems);
        assert!(
            seen.problems[0]
                .message
                .starts_with("malformed JSON line skipped: expected ident"),
            "{:?}",
            seen.problems
        );
        assert!(
            seen.problems[0].location.starts_with("t.json:1:"),
            "{:?}",
            seen.problems
        );
        // A non-object element: serde's problem, the records around it once each.
        let seen = read(r#"{"Records":[{"eventName":"A"},5,{"eventName":"C"}]}"#);
        assert_eq!(
            seen.records,
            vec![(1, Some("A".into())), (3, Some("C".into()))]
        );
        assert_eq!(seen.problems.len(), 1, "{:?}", seen.problems);
        assert!(seen.problems[0].location.ends_with("(record 2)"));
        // JSON lines: each line on its own.
        let seen = read("{\"eventName\":\"A\"}\n{\"eventName\":\"B\"\n{\"eventName\":\"C\"}\n");
        assert_eq!(
            seen.records,
            vec![(1, Some("A".into())), (2, Some("C".into()))]
        );
        assert_eq!(seen.problems.len(), 1, "{:?}", seen.problems);
        assert!(seen.problems[0].location.starts_with("t.json:2:"));
    }
}
