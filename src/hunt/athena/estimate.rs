//! The dry run's estimate of the bytes each query will scan. Athena has no estimate API, and
//! `EXPLAIN` sizes only tables with statistics; but on the JSON CloudTrail table Athena reads
//! every object under the partitions a query names, whatever the rest of its WHERE clause says,
//! and bills their (gzip) size. So the estimate is the size of those objects: the table's
//! layout from Glue (`GetTable`; `GetPartitions` when partitions are registered rather than
//! projected), the S3 prefixes of the partitions the query's days and regions select, their
//! objects' sizes summed (`ListObjectsV2`, paged). An upper bound: Athena may skip an object
//! it can tell holds no row for the query (it rarely can on JSON).
//!
//! Locations and templates are the catalog's — anyone who may edit it wrote them — so they are
//! checked (`s3://` with a bucket, no `..`), and the work is bounded: at most [`MAX_PREFIXES`]
//! prefixes, [`MAX_OBJECTS`] objects, [`MAX_PARTITIONS`] registered partitions. Past a bound,
//! or when anything cannot be read, the line says "no estimate" and why: never a made-up number.

use super::query::Query;
use super::{Table, USD_PER_TB, human_bytes};
use chrono::NaiveDate;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Partition prefixes one query's estimate lists at most.
pub const MAX_PREFIXES: usize = 20_000;
/// Objects one query's estimate sums at most.
pub const MAX_OBJECTS: u64 = 2_000_000;
/// Partitions read from Glue at most.
pub const MAX_PARTITIONS: usize = 100_000;
/// Prefixes listed at once.
const LISTINGS_AT_ONCE: usize = 8;

/// Where a table's data is, as the catalog describes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// Partition projection: its partition keys and the table's parameters (`projection.*`,
    /// `storage.location.template`), and its location (the template's default).
    Projected {
        location: String,
        keys: Vec<String>,
        params: BTreeMap<String, String>,
    },
    /// Partitions registered in the catalog: each one's values (in key order) and location.
    Listed {
        keys: Vec<String>,
        partitions: Vec<(Vec<String>, String)>,
    },
    /// Not partitioned: every object under its location.
    Whole(String),
}

/// One S3 prefix to list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Prefix {
    pub bucket: String,
    pub prefix: String,
}

/// `s3://bucket/key/prefix` as a bucket and a directory prefix (ending in `/`, or empty).
pub fn parse_s3(url: &str) -> Result<Prefix, String> {
    let shown: String = url.chars().take(200).collect();
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("location `{shown}` is not an s3:// URL"))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if !crate::engine::state::is_bucket_name(bucket) {
        return Err(format!("location `{shown}` names no valid S3 bucket"));
    }
    if key.split('/').any(|s| s == "." || s == "..") || key.chars().any(char::is_control) {
        return Err(format!(
            "location `{shown}` has a `.`/`..` segment or a control character"
        ));
    }
    let mut prefix = key.to_string();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(Prefix {
        bucket: bucket.to_string(),
        prefix,
    })
}

/// `yyyy/MM/dd`-style (Java) date formats, as chrono's; `Err` for anything else.
fn date_format(java: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = java;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("yyyy") {
            out.push_str("%Y");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("MM") {
            out.push_str("%m");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("dd") {
            out.push_str("%d");
            rest = r;
        } else {
            let c = rest.chars().next().unwrap_or('/');
            if c.is_ascii_alphabetic() || c == '%' || c == '\'' {
                return Err(format!(
                    "date format `{java}`: rekey reads only yyyy, MM and dd (daily partitions)"
                ));
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    Ok(out)
}

/// The values of one projected key the query reads.
fn projected_values(
    key: &str,
    params: &BTreeMap<String, String>,
    table: &Table,
    days: (NaiveDate, NaiveDate),
) -> Result<Vec<String>, String> {
    let param = |name: &str| params.get(&format!("projection.{key}.{name}"));
    match param("type").map(String::as_str) {
        Some("date") if key == "timestamp" => {
            if let Some(unit) = param("interval.unit")
                && !unit.eq_ignore_ascii_case("DAYS")
            {
                return Err(format!(
                    "partition `{key}` is projected by {unit}; rekey estimates daily partitions"
                ));
            }
            let format = date_format(param("format").map_or("yyyy/MM/dd", String::as_str))?;
            let n = (days.1 - days.0).num_days().max(0) as usize + 1;
            if n > MAX_PREFIXES {
                return Err(format!("{n} days, more than {MAX_PREFIXES} partitions"));
            }
            Ok(days
                .0
                .iter_days()
                .take(n)
                .map(|d| d.format(&format).to_string())
                .collect())
        }
        Some("enum") => {
            let all: Vec<String> = param("values")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default();
            if key == "region" && table.region_partition && !table.regions.is_empty() {
                Ok(all
                    .into_iter()
                    .filter(|v| table.regions.contains(v))
                    .collect())
            } else {
                Ok(all)
            }
        }
        Some(other) => Err(format!(
            "partition `{key}` is projected as `{other}`, which the query does not narrow"
        )),
        None => Err(format!("partition `{key}` has no projection type")),
    }
}

/// The S3 prefixes a query over `days` (first and last) reads in `layout`.
pub fn prefixes(
    layout: &Layout,
    table: &Table,
    days: (NaiveDate, NaiveDate),
) -> Result<Vec<Prefix>, String> {
    let mut urls: Vec<String> = match layout {
        Layout::Whole(location) => vec![location.clone()],
        Layout::Projected {
            location,
            keys,
            params,
        } => {
            let template = match params.get("storage.location.template") {
                Some(t) => t.clone(),
                // Without a template, Hive's `key=value` directories under the location.
                None => keys
                    .iter()
                    .fold(location.trim_end_matches('/').to_string(), |t, k| {
                        format!("{t}/{k}=${{{k}}}")
                    }),
            };
            let mut urls = vec![template];
            for key in keys {
                let values = projected_values(key, params, table, days)?;
                let n = urls.len().saturating_mul(values.len());
                if n > MAX_PREFIXES {
                    return Err(format!(
                        "{n} or more partition prefixes, more than {MAX_PREFIXES}"
                    ));
                }
                let var = format!("${{{key}}}");
                let var = var.as_str();
                urls = urls
                    .iter()
                    .flat_map(|u| values.iter().map(move |v| u.replace(var, v)))
                    .collect();
            }
            if let Some(u) = urls.iter().find(|u| u.contains("${")) {
                let shown: String = u.chars().take(200).collect();
                return Err(format!(
                    "location template `{shown}` names a variable that is no partition key"
                ));
            }
            urls
        }
        Layout::Listed { keys, partitions } => {
            let first = days.0.format("%Y/%m/%d").to_string();
            let last = days.1.format("%Y/%m/%d").to_string();
            partitions
                .iter()
                .filter(|(values, _)| {
                    keys.iter().zip(values).all(|(k, v)| match k.as_str() {
                        // As the query compares them: strings.
                        "timestamp" => first <= *v && *v <= last,
                        "region" if table.region_partition && !table.regions.is_empty() => {
                            table.regions.contains(v)
                        }
                        _ => true,
                    })
                })
                .map(|(_, location)| location.clone())
                .collect()
        }
    };
    if urls.len() > MAX_PREFIXES {
        return Err(format!(
            "{} partition prefixes, more than {MAX_PREFIXES}",
            urls.len()
        ));
    }
    urls.sort();
    urls.dedup();
    let mut out = urls
        .iter()
        .map(|u| parse_s3(u))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn glue_failed<E>(op: &str, table: &Table, e: &aws_sdk_s3::error::SdkError<E>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    format!(
        "Glue {op} {}.{}: {}",
        table.database,
        table.table,
        crate::hunt::remote::aws_error(e)
    )
}

/// The table's layout, from Glue.
pub async fn layout(glue: &aws_sdk_glue::Client, table: &Table) -> Result<Layout, String> {
    let answer = glue
        .get_table()
        .database_name(&table.database)
        .name(&table.table)
        .send()
        .await
        .map_err(|e| glue_failed("GetTable", table, &e))?;
    let t = answer
        .table()
        .ok_or("Glue GetTable answered without the table")?;
    let location = t
        .storage_descriptor()
        .and_then(|s| s.location())
        .unwrap_or_default()
        .to_string();
    let keys: Vec<String> = t
        .partition_keys()
        .iter()
        .map(|c| c.name().to_ascii_lowercase())
        .collect();
    let params: BTreeMap<String, String> = t
        .parameters()
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    if keys.is_empty() {
        return Ok(Layout::Whole(location));
    }
    if params
        .get("projection.enabled")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Ok(Layout::Projected {
            location,
            keys,
            params,
        });
    }
    let mut partitions = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = glue
            .get_partitions()
            .database_name(&table.database)
            .table_name(&table.table)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| glue_failed("GetPartitions", table, &e))?;
        for p in page.partitions() {
            let loc = p
                .storage_descriptor()
                .and_then(|s| s.location())
                .unwrap_or_default();
            partitions.push((p.values().to_vec(), loc.to_string()));
        }
        if partitions.len() > MAX_PARTITIONS {
            return Err(format!(
                "more than {MAX_PARTITIONS} partitions registered in Glue"
            ));
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(Layout::Listed { keys, partitions })
}

/// The bytes and objects under `prefixes`; `Err` past [`MAX_OBJECTS`] or on a failed listing.
pub async fn size(s3: &aws_sdk_s3::Client, prefixes: &[Prefix]) -> Result<(u64, u64), String> {
    let objects = AtomicU64::new(0);
    let objects = &objects;
    let listings = futures::stream::iter(prefixes)
        .map(|p| async move {
            let mut bytes = 0u64;
            let mut token: Option<String> = None;
            loop {
                let page = s3
                    .list_objects_v2()
                    .bucket(&p.bucket)
                    .prefix(&p.prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "ListObjectsV2 s3://{}/{}: {}",
                            p.bucket,
                            p.prefix,
                            crate::hunt::remote::aws_error(&e)
                        )
                    })?;
                for o in page.contents() {
                    bytes += o.size().unwrap_or(0).max(0) as u64;
                }
                let n = page.contents().len() as u64;
                if objects.fetch_add(n, Ordering::Relaxed) + n > MAX_OBJECTS {
                    return Err(format!("more than {MAX_OBJECTS} objects"));
                }
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) && !t.is_empty() => {
                        token = Some(t.to_string())
                    }
                    _ => return Ok(bytes),
                }
            }
        })
        .buffer_unordered(LISTINGS_AT_ONCE);
    futures::pin_mut!(listings);
    let mut total = 0u64;
    while let Some(r) = listings.next().await {
        total += r?;
    }
    Ok((total, objects.load(Ordering::Relaxed)))
}

/// The estimate line of one query.
pub fn line(bytes: u64, objects: u64, prefixes: usize) -> String {
    format!(
        "estimated scan: {} ({bytes} bytes in {objects} S3 object(s) under the {prefixes} partition prefix(es) the query reads), about ${:.4} at ${USD_PER_TB}/TB — an upper bound from object sizes (Athena bills the gzip JSON it reads, about the objects' size; 10 MB minimum per query)",
        human_bytes(bytes),
        bytes as f64 / 1e12 * USD_PER_TB
    )
}

/// One line per query: its estimate, or "no estimate: why".
pub async fn estimate(
    sdk: &aws_config::SdkConfig,
    table: &Table,
    queries: &[Query],
) -> Vec<String> {
    let glue = aws_sdk_glue::Client::new(sdk);
    let mut config = aws_sdk_s3::config::Builder::from(sdk);
    if sdk.endpoint_url().is_some() {
        config = config.force_path_style(true);
    }
    let s3 = aws_sdk_s3::Client::from_conf(config.build());
    let layout = layout(&glue, table).await;
    let mut out = Vec::new();
    for q in queries {
        let one = async {
            let layout = layout.as_ref().map_err(Clone::clone)?;
            let prefixes = prefixes(layout, table, q.days)?;
            let (bytes, objects) = size(&s3, &prefixes).await?;
            Ok::<String, String>(line(bytes, objects, prefixes.len()))
        };
        out.push(match one.await {
            Ok(l) => format!("{} query {l}", q.label),
            Err(e) => format!("{} query: no estimate: {e}", q.label),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    fn projected(template: &str, regions: &str) -> Layout {
        let mut params = BTreeMap::new();
        params.insert("projection.enabled".into(), "true".into());
        params.insert("projection.timestamp.type".into(), "date".into());
        params.insert("projection.timestamp.format".into(), "yyyy/MM/dd".into());
        params.insert("projection.region.type".into(), "enum".into());
        params.insert("projection.region.values".into(), regions.into());
        params.insert("storage.location.template".into(), template.into());
        Layout::Projected {
            location: "s3://trail/AWSLogs/1/CloudTrail".into(),
            keys: vec!["region".into(), "timestamp".into()],
            params,
        }
    }

    #[test]
    fn a_projection_gives_the_prefixes_of_the_days_and_regions_read() {
        let mut table = Table::parse_name("db.t").expect("table");
        table.region_partition = true;
        table.regions = vec!["eu-west-1".into()];
        let layout = projected(
            "s3://trail/AWSLogs/1/CloudTrail/${region}/${timestamp}",
            "us-east-1,eu-west-1",
        );
        let p = prefixes(&layout, &table, (day("2024-02-28"), day("2024-03-01"))).expect("ok");
        let got: Vec<String> = p
            .iter()
            .map(|p| format!("{}/{}", p.bucket, p.prefix))
            .collect();
        assert_eq!(
            got,
            [
                "trail/AWSLogs/1/CloudTrail/eu-west-1/2024/02/28/",
                "trail/AWSLogs/1/CloudTrail/eu-west-1/2024/02/29/",
                "trail/AWSLogs/1/CloudTrail/eu-west-1/2024/03/01/",
            ]
        );
        table.regions.clear();
        let p = prefixes(&layout, &table, (day("2024-03-01"), day("2024-03-01"))).expect("ok");
        assert_eq!(p.len(), 2, "every region of the projection");
    }

    #[test]
    fn hostile_locations_and_huge_projections_are_refused() {
        let table = Table::parse_name("db.t").expect("table");
        for bad in [
            "s3://",
            "s3:///AWSLogs/${region}/${timestamp}",
            "s3://trail/AWSLogs/../other/${region}/${timestamp}",
            "https://trail/${region}/${timestamp}",
            "s3://trail/${account}/${region}/${timestamp}",
        ] {
            let e = prefixes(
                &projected(bad, "us-east-1"),
                &table,
                (day("2024-03-01"), day("2024-03-01")),
            )
            .expect_err(bad);
            assert!(e.contains("location"), "{bad}: {e}");
        }
        let many: Vec<String> = (0..5000).map(|i| format!("r{i}")).collect();
        let e = prefixes(
            &projected("s3://trail/${region}/${timestamp}", &many.join(",")),
            &table,
            (day("2000-01-01"), day("2099-12-31")),
        )
        .expect_err("too many");
        assert!(e.contains("more than"), "{e}");
        assert!(parse_s3("s3://Trail_Bucket/x").is_err());
        assert_eq!(
            parse_s3("s3://trail").expect("bucket"),
            Prefix {
                bucket: "trail".into(),
                prefix: String::new()
            }
        );
        assert!(date_format("yyyy-MM-dd-HH").is_err());
        assert_eq!(date_format("yyyy-MM-dd").as_deref(), Ok("%Y-%m-%d"));
    }

    #[test]
    fn registered_partitions_are_selected_as_the_query_compares_them() {
        let mut table = Table::parse_name("db.t").expect("table");
        table.region_partition = true;
        table.regions = vec!["us-east-1".into()];
        let part = |r: &str, d: &str| {
            (
                vec![r.to_string(), d.to_string()],
                format!("s3://trail/{r}/{d}"),
            )
        };
        let layout = Layout::Listed {
            keys: vec!["region".into(), "timestamp".into()],
            partitions: vec![
                part("us-east-1", "2024/02/29"),
                part("us-east-1", "2024/03/01"),
                part("eu-west-1", "2024/03/01"),
                part("us-east-1", "2024/03/02"),
            ],
        };
        let p = prefixes(&layout, &table, (day("2024-03-01"), day("2024-03-02"))).expect("ok");
        let got: Vec<&str> = p.iter().map(|p| p.prefix.as_str()).collect();
        assert_eq!(got, ["us-east-1/2024/03/01/", "us-east-1/2024/03/02/"]);
    }
}
