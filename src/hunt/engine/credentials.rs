//! What a hunt keeps per credential, found with one lookup of its name per record: the hours
//! of the day and the addresses and countries it was used from, before and after the incident
//! start, and how many findings each rule made for it (for the cap per pair); then, once the
//! workers' keeps are merged, the checks made from them: new addresses, new countries, unusual
//! hours.
//!
//! Why one place: a record was looked up in a map per keep (addresses, hours, and the
//! interner for its findings), each a hash and a comparison of the credential's name, and every
//! new credential's address map was an allocation of its own.

use super::{At, HashMap, HuntOptions, Interner, names_credential};
use crate::hunt::Severity;
use crate::hunt::chunked::Chunked;
use crate::hunt::fields::Fields;
use crate::hunt::findings::{Finding, HuntReport};
use crate::hunt::source::{Core, Loc, Source, first};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use std::collections::HashSet;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::Arc;

/// Below this many records before the incident start, a credential's hours say nothing.
const MIN_HOURS_BASELINE: u64 = 20;

/// The first use of a credential from an address after the incident start (its time is kept
/// beside it, see [`Seen`]).
#[derive(Debug, Clone)]
pub(super) struct FirstUse {
    /// Where the record is in the run's inputs (input number, line, record): of several
    /// records of the same second, the first in the inputs' order is named, whichever worker
    /// read it — so the report is the same for any number of workers.
    pub(super) at: At,
    pub(super) location: String,
    pub(super) action: Option<Arc<str>>,
    pub(super) user_agent: Option<Arc<str>>,
}

/// Hours of the day a credential was used in, kept small (every credential has one, and
/// every record reads it): before the incident start, how many uses and at which hours (all
/// a baseline asks); after it, per hour the uses and the first time. No record locations.
/// In this order (`repr(C)`): the few numbers first, next to the address's entry in
/// [`CredState`], then the hours.
#[derive(Debug, Clone)]
#[repr(C)]
pub(super) struct Hours {
    /// Uses before the incident start, at any hour.
    before: u64,
    /// Bit `h`: a use before the incident start at hour `h`.
    before_hours: u32,
    source: Source,
    after: [HourUse; 24],
}

/// The uses of a credential at one hour of the day after the incident start. A record's hour
/// updates both numbers, so they sit side by side: kept in two arrays they were two cache
/// misses per record (the states of a busy trail's credentials do not stay in cache), one of
/// the largest single costs of a record. Packed to 12 bytes, the hours take no more room.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
struct HourUse {
    /// Unix seconds of the first use; `i64::MAX`: none.
    first: i64,
    count: u32,
}

impl HourUse {
    const NONE: HourUse = HourUse {
        first: i64::MAX,
        count: 0,
    };

    fn add(&mut self, first: i64, count: u32) {
        self.count = self.count.saturating_add(count);
        self.first = self.first.min(first);
    }
}

impl Hours {
    fn new(source: Source) -> Hours {
        Hours {
            source,
            before_hours: 0,
            before: 0,
            after: [HourUse::NONE; 24],
        }
    }

    /// A use at `time`, before the incident start or `after` it.
    pub(super) fn observe(&mut self, after: bool, time: DateTime<Utc>) {
        use chrono::Timelike;
        let h = time.hour() as usize % 24;
        if after {
            self.after[h].add(time.timestamp(), 1);
        } else {
            self.before_hours |= 1 << h;
            self.before = self.before.saturating_add(1);
        }
    }

    /// Whether the credential was used at hour `h` before the incident start.
    fn used_before_at(&self, h: usize) -> bool {
        self.before_hours & (1 << h) != 0
    }

    fn merge(&mut self, x: &Hours) {
        self.before_hours |= x.before_hours;
        self.before = self.before.saturating_add(x.before);
        for (mine, theirs) in self.after.iter_mut().zip(x.after) {
            mine.add(theirs.first, theirs.count);
        }
    }
}

/// Where and when a credential was seen from one address (or country). Small (40 bytes), the
/// first use behind a pointer and its time beside it (what every later record compares with):
/// every record finds its address's entry in a map of these, and entries three times the size
/// were a cache miss apart each.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    source: Source,
    before: bool,
    first_after: Option<(DateTime<Utc>, Box<FirstUse>)>,
    count: u64,
}

impl Seen {
    fn new(source: Source) -> Seen {
        Seen {
            source,
            before: false,
            first_after: None,
            count: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn observe(
        &mut self,
        after: bool,
        time: DateTime<Utc>,
        item: usize,
        loc: &Loc<'_>,
        f: &Fields<'_>,
        core: &Core,
        strings: &mut Interner,
    ) {
        self.count += 1;
        if !after {
            self.before = true;
        } else if self.first_after.as_ref().is_none_or(|(t, _)| time < *t) {
            // A worker reads its inputs in their order: of records of the same second, the
            // first it read is first in (input, line, record), so `<` keeps it.
            let first_use = FirstUse {
                at: (item, loc.line, loc.index),
                location: loc.text(),
                action: first(f, &core.action).map(|a| strings.get(a)),
                user_agent: first(f, &core.ua).map(|u| strings.get(u)),
            };
            self.first_after = Some((time, Box::new(first_use)));
        }
    }

    fn merge(&mut self, x: Seen) {
        self.before |= x.before;
        self.count += x.count;
        if let Some((time, fa)) = x.first_after
            && self
                .first_after
                .as_ref()
                .is_none_or(|(t, u)| (time, fa.at) < (*t, u.at))
        {
            self.first_after = Some((time, fa));
        }
    }
}

/// A credential's addresses: nearly always one or two, so the first is kept inline and the
/// others in a map made when a second one appears.
#[derive(Debug, Default)]
#[repr(C)]
pub(super) struct Addresses {
    first: Option<(IpAddr, Seen)>,
    more: RareMap<IpAddr, Seen>,
}

impl Addresses {
    /// What was seen from `ip`, new (first seen in `source`) when nothing was yet.
    pub(super) fn seen(&mut self, ip: IpAddr, source: Source) -> &mut Seen {
        if self.first.is_none() {
            return &mut self.first.insert((ip, Seen::new(source))).1;
        }
        if let Some((first, s)) = &mut self.first
            && *first == ip
        {
            return s;
        }
        self.more
            .made()
            .entry(ip)
            .or_insert_with(|| Seen::new(source))
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Seen)> {
        self.first
            .iter()
            .map(|(ip, s)| (ip, s))
            .chain(self.more.iter())
    }

    fn merge(&mut self, other: Addresses) {
        for (ip, x) in other.first.into_iter().chain(other.more) {
            match &mut self.first {
                None => self.first = Some((ip, x)),
                Some((first, s)) if *first == ip => s.merge(x),
                Some(_) => match self.more.made().entry(ip) {
                    Entry::Occupied(mut s) => s.get_mut().merge(x),
                    Entry::Vacant(v) => {
                        v.insert(x);
                    }
                },
            }
        }
    }
}

/// A map most credentials never fill (a second address, countries): a null pointer until its
/// first entry. Every credential has its state, and an empty map was 40 bytes of it.
#[derive(Debug)]
pub(super) struct RareMap<K, V>(Option<Box<HashMap<K, V>>>);

impl<K, V> Default for RareMap<K, V> {
    fn default() -> Self {
        RareMap(None)
    }
}

impl<K: std::hash::Hash + Eq, V> RareMap<K, V> {
    /// The map, made when there is none yet.
    fn made(&mut self) -> &mut HashMap<K, V> {
        self.0.get_or_insert_with(Box::default)
    }

    fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.as_mut()?.get_mut(k)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().flat_map(|m| m.iter())
    }
}

impl<K, V> IntoIterator for RareMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::iter::Flatten<std::option::IntoIter<HashMap<K, V>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.map(|m| *m).into_iter().flatten()
    }
}

/// Findings counted per rule, for the cap per (credential, rule) pair. Keyed by the address of
/// the rule's id (one number to hash, not its text): rules loaded with the same id text are
/// counted apart here and summed by text in [`over_cap`].
#[derive(Debug, Default)]
pub(super) struct RuleCounts(HashMap<usize, (Arc<str>, u64)>);

impl RuleCounts {
    /// One more finding of `rule_id`: how many there are now.
    pub(super) fn add(&mut self, rule_id: &Arc<str>) -> u64 {
        let (_, n) = self
            .0
            .entry(Arc::as_ptr(rule_id) as *const u8 as usize)
            .or_insert_with(|| (rule_id.clone(), 0));
        *n += 1;
        *n
    }

    fn merge(&mut self, other: RuleCounts) {
        for (key, (id, n)) in other.0 {
            self.0.entry(key).or_insert((id, 0)).1 += n;
        }
    }
}

/// Everything a worker keeps about one credential. In this order (`repr(C)`): what every
/// record reads first — its address's entry, then its hours — so that a record's visit touches
/// the lines at the state's start and its hour's line, not lines the compiler's order
/// scattered.
#[derive(Debug)]
#[repr(C)]
pub(super) struct CredState {
    pub(super) addresses: Addresses,
    pub(super) hours: Hours,
    /// Its name, shared by its findings.
    pub(super) name: Arc<str>,
    /// Rare (only some sources name a country).
    pub(super) countries: RareMap<String, Seen>,
    pub(super) per_rule: RuleCounts,
}

impl CredState {
    /// Applies `observe` to what was seen from `country`: new (first seen in `source`) when
    /// nothing was yet, its name then copied once.
    pub(super) fn country(
        &mut self,
        country: &str,
        source: Source,
        observe: impl FnOnce(&mut Seen),
    ) {
        match self.countries.get_mut(country) {
            Some(s) => observe(s),
            None => {
                let mut s = Seen::new(source);
                observe(&mut s);
                self.countries.made().insert(country.to_string(), s);
            }
        }
    }

    fn merge(&mut self, other: CredState) {
        self.hours.merge(&other.hours);
        self.addresses.merge(other.addresses);
        for (country, x) in other.countries {
            match self.countries.made().entry(country) {
                Entry::Occupied(mut s) => s.get_mut().merge(x),
                Entry::Vacant(v) => {
                    v.insert(x);
                }
            }
        }
        self.per_rule.merge(other.per_rule);
    }
}

/// The (credential, rule id) pairs past the cap, with their counts.
pub(super) type PairCounts = HashMap<(Option<Arc<str>>, Arc<str>), u64>;

/// The credentials of a worker (then of the run, merged), each found by its name.
#[derive(Default)]
pub(super) struct Credentials {
    /// Names inline (up to 23 bytes: every access key id): every record is looked up here,
    /// and a name behind a pointer was a cache miss of its own per record.
    index: HashMap<smol_str::SmolStr, usize>,
    /// Each a few hundred bytes, as many as the credentials seen.
    states: Chunked<CredState>,
    /// Findings per rule of records that name no credential.
    pub(super) unattributed: RuleCounts,
}

impl Credentials {
    /// The number of `name`'s state, made (first seen in `source`) when new.
    pub(super) fn id(&mut self, name: &str, source: Source) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let name: Arc<str> = Arc::from(name);
        let i = self.states.push(CredState {
            name: name.clone(),
            hours: Hours::new(source),
            addresses: Addresses::default(),
            countries: RareMap::default(),
            per_rule: RuleCounts::default(),
        });
        self.index.insert(smol_str::SmolStr::new(&*name), i);
        i
    }

    /// The state numbered `id` by [`Self::id`].
    pub(super) fn state(&mut self, id: usize) -> &mut CredState {
        &mut self.states[id]
    }

    /// The records before the incident start per credential, for those that have any: what
    /// severities compare with.
    pub(super) fn records_before(&self) -> HashMap<Arc<str>, u64> {
        self.states
            .iter()
            .map(|s| (s.name.clone(), s.hours.before))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Another worker's credentials merged into these.
    pub(super) fn merge(&mut self, other: Credentials) {
        for s in other.states {
            match self.index.get(&*s.name) {
                Some(&i) => self.states[i].merge(s),
                None => {
                    let name = smol_str::SmolStr::new(&*s.name);
                    let i = self.states.push(s);
                    self.index.insert(name, i);
                }
            }
        }
        self.unattributed.merge(other.unattributed);
    }
}

/// A country first seen for a credential after the incident start, when it has a baseline.
pub(super) fn country_baselines(creds: &Credentials, report: &mut HuntReport) {
    for (cred, per) in creds.states.iter().map(|s| (&s.name, &s.countries)) {
        if !per.iter().any(|(_, s)| s.before) {
            continue;
        }
        for (country, s) in per.iter() {
            let Some((time, first)) = &s.first_after else {
                continue;
            };
            if s.before {
                continue;
            }
            report.findings.push(Finding {
                rule_id: "rekey-new-country".into(),
                rule: "Country first seen for the credential after the incident start".into(),
                hunt: Some("new-source-address".into()),
                severity: Severity::Medium,
                severity_reason:
                    "country baseline: a country the credential was not used from before".into(),
                attack: Some("attack.initial-access,attack.t1078.004".into()),
                source: s.source,
                credential: Some(cred.clone()),
                principal: None,
                time: *time,
                action: first.action.clone(),
                source_ip: None,
                user_agent: first.user_agent.clone(),
                error: None,
                location: first.location.clone(),
                record_id: None,
                detail: Some(format!("country {country} ({} uses)", s.count)),
            });
        }
    }
}

/// Use at an hour of the day (UTC) never seen for a credential before the incident start, when
/// the credential has enough history for its hours to mean something.
pub(super) fn hour_baselines(creds: &Credentials, report: &mut HuntReport) {
    for (cred, h) in creds.states.iter().map(|s| (&s.name, &s.hours)) {
        if h.before < MIN_HOURS_BASELINE {
            continue;
        }
        for (hour, uses) in h.after.iter().enumerate() {
            let (first, count) = (uses.first, uses.count);
            let Some(first) = DateTime::from_timestamp(first, 0).filter(|_| first != i64::MAX)
            else {
                continue;
            };
            if h.used_before_at(hour) {
                continue;
            }
            let usual: Vec<String> = (0..24)
                .filter(|&i| h.used_before_at(i))
                .map(|i| format!("{i:02}h"))
                .collect();
            report.findings.push(Finding {
                rule_id: "rekey-unusual-hour".into(),
                rule: "Credential used at an hour not seen before the incident start".into(),
                hunt: Some("new-source-address".into()),
                severity: Severity::Low,
                severity_reason: "hour baseline: an hour the credential was not used at before"
                    .into(),
                attack: None,
                source: h.source,
                credential: Some(cred.clone()),
                principal: None,
                time: first,
                action: None,
                source_ip: None,
                user_agent: None,
                error: None,
                location: format!("the credential's records at {}", first.to_rfc3339()),
                record_id: None,
                detail: Some(format!(
                    "{count} use(s) at {hour:02}h UTC; before: {}",
                    usual.join(" ")
                )),
            });
        }
    }
}

/// The network an address belongs to for the baseline: its /24 (IPv4) or /48 (IPv6).
fn network(ip: IpAddr) -> IpNet {
    let prefix = if ip.is_ipv4() { 24 } else { 48 };
    IpNet::new(ip, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

/// New addresses of a credential after the incident start (against its networks before it),
/// and uses from outside the allow-list.
pub(super) fn baselines(creds: &Credentials, opts: &HuntOptions, report: &mut HuntReport) {
    let allowed = |ip: &IpAddr| opts.allow.iter().any(|n| n.contains(ip));
    let mut without = 0usize;
    // Credentials used from no address (service names only) have no address baseline to miss.
    for (cred, per) in creds
        .states
        .iter()
        .filter(|s| !s.addresses.is_empty())
        .map(|s| (&s.name, &s.addresses))
    {
        let known: HashSet<IpNet> = per
            .iter()
            .filter(|(_, s)| s.before)
            .map(|(ip, _)| network(*ip))
            .collect();
        let has_baseline = !known.is_empty();
        if !has_baseline {
            without += 1;
        }
        for (ip, s) in per.iter() {
            let Some((
                time,
                FirstUse {
                    location: loc,
                    action,
                    user_agent: ua,
                    ..
                },
            )) = s.first_after.as_ref().map(|(t, u)| (*t, &**u))
            else {
                continue;
            };
            if allowed(ip) {
                continue;
            }
            let mut push =
                |rule_id: &str, rule: &str, hunt: &str, severity, reason: &str, detail: String| {
                    report.findings.push(Finding {
                        rule_id: rule_id.into(),
                        rule: rule.into(),
                        hunt: Some(hunt.into()),
                        severity,
                        severity_reason: reason.into(),
                        attack: Some("attack.initial-access,attack.t1078.004".into()),
                        source: s.source,
                        credential: Some(cred.clone()),
                        principal: None,
                        time: time.to_owned(),
                        action: action.clone(),
                        source_ip: Some(ip.to_string().into()),
                        user_agent: ua.clone(),
                        error: None,
                        location: loc.clone(),
                        record_id: None,
                        detail: Some(detail),
                    })
                };
            // After a rotation only the new credential must stay inside the allow-list; a
            // standalone hunt holds every credential to it.
            let held_to_list = match &opts.rotation {
                Some(r) => r.new.iter().any(|n| names_credential(cred, n)),
                None => true,
            };
            if !opts.allow.is_empty() && held_to_list {
                push(
                    "rekey-outside-allowlist",
                    "Credential used from outside the allow-list",
                    "new-credential-outside-allowlist",
                    Severity::High,
                    "allow-list: every use must come from an allowed CIDR",
                    format!("{ip} is in no allowed CIDR ({} uses)", s.count),
                );
            }
            if has_baseline && !s.before {
                let net = network(*ip);
                let (severity, what) = if known.contains(&net) {
                    (
                        Severity::Low,
                        format!("new address {ip} in the known network {net}"),
                    )
                } else {
                    (
                        Severity::Medium,
                        format!(
                            "new address {ip}, network {net} never seen before the incident start"
                        ),
                    )
                };
                push(
                    "rekey-new-source-address",
                    "Address first seen for the credential after the incident start",
                    "new-source-address",
                    severity,
                    if severity == Severity::Low {
                        "address baseline: a new address inside a network seen before"
                    } else {
                        "address baseline: a network not seen before the incident start"
                    },
                    format!("{what} ({} uses)", s.count),
                );
            }
        }
    }
    if without > 0 {
        report.notes.push(format!(
            "{without} credential(s) have no records before {} in these inputs: no address baseline for them",
            opts.since.to_rfc3339()
        ));
    }
}

/// The (credential, rule id) pairs with more than `cap` findings over all the workers'
/// credentials, with their counts.
pub(super) fn over_cap(workers: &[Credentials], cap: u64) -> PairCounts {
    let mut all = PairCounts::default();
    for w in workers {
        let named = w.states.iter().map(|s| (Some(&s.name), &s.per_rule));
        for (cred, counts) in named.chain([(None, &w.unattributed)]) {
            // Summed by the id's text (see [`RuleCounts`]).
            for (id, n) in counts.0.values() {
                *all.entry((cred.cloned(), id.clone())).or_default() += n;
            }
        }
    }
    all.retain(|_, n| *n > cap);
    all
}

#[cfg(test)]
mod tests {
    use super::{CredState, Credentials, HourUse, Seen, Source};
    use chrono::TimeZone;

    /// Each name has one state, whatever the index's growth and whatever its length (inline
    /// or not), and keeps it when another worker's credentials are merged in, its hours summed.
    #[test]
    fn a_name_has_one_state_in_a_worker_and_after_a_merge() {
        let names: Vec<String> = (0..5000)
            .map(|i| match i % 2 {
                0 => format!("AKIA{i:016}"),
                _ => format!("arn:aws:iam::123456789012:user/a-longer-name-{i}"),
            })
            .collect();
        let mut a = Credentials::default();
        let ids: Vec<usize> = names.iter().map(|n| a.id(n, Source::Cloudtrail)).collect();
        let expected: Vec<usize> = (0..names.len()).collect();
        assert_eq!(ids, expected);
        for (n, &id) in names.iter().zip(&ids) {
            assert_eq!(a.id(n, Source::Cloudtrail), id);
            assert_eq!(&*a.state(id).name, n.as_str());
        }
        let t = chrono::Utc.with_ymd_and_hms(2023, 1, 5, 10, 30, 0).unwrap();
        a.state(ids[7]).hours.observe(true, t);
        let mut b = Credentials::default();
        let new = b.id("AKIA-only-in-the-other-worker", Source::Cloudtrail);
        let seven = b.id(&names[7], Source::Cloudtrail);
        b.state(new).hours.observe(true, t);
        b.state(seven).hours.observe(true, t);
        b.state(seven)
            .hours
            .observe(true, t - chrono::Duration::minutes(5));
        a.merge(b);
        assert_eq!(a.id(&names[7], Source::Cloudtrail), ids[7]);
        let hour = a.state(ids[7]).hours.after[10];
        assert_eq!(({ hour.count }, { hour.first }), (3, t.timestamp() - 300));
        let merged_new = a.id("AKIA-only-in-the-other-worker", Source::Cloudtrail);
        assert_eq!(merged_new, names.len());
        assert_eq!({ a.state(merged_new).hours.after[10].count }, 1);
        assert_eq!(a.id("AKIA-never-seen", Source::Cloudtrail), names.len() + 1);
    }

    /// Every record finds its address's entry among these: what its doc says of its size.
    #[test]
    fn an_address_entry_stays_small() {
        assert!(
            std::mem::size_of::<Seen>() <= 40,
            "{}",
            std::mem::size_of::<Seen>()
        );
    }

    /// Every credential has a state, every record reads its own: 592 bytes before the hours
    /// before the incident start were kept as a count and a mask and the rare maps boxed.
    #[test]
    fn a_credential_state_stays_small() {
        let size = std::mem::size_of::<CredState>();
        assert!(size <= 440, "{size}");
    }

    /// A record's hour is one entry of twelve bytes: its count and first time together.
    #[test]
    fn an_hour_is_counted_in_one_place() {
        assert_eq!(std::mem::size_of::<HourUse>(), 12);
        assert_eq!(std::mem::size_of::<[HourUse; 24]>(), 24 * 12);
    }
}
