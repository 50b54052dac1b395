//! Static zones: RFC 1035 zone files loaded once at start and served
//! authoritatively, either as zones of their own or, for a file whose origin
//! is roster's dynamic domain, beside the registered records.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use hickory_proto::{
    rr::{LowerName, Name, RData, Record, RecordType},
    serialize::txt::Parser,
};

/// A zone file that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("cannot read zone directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read zone file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("zone file {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("zone file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One zone's records, by lower-cased owner name.
#[derive(Debug)]
pub struct StaticZone {
    pub origin: LowerName,
    pub records: HashMap<LowerName, Vec<Record>>,
    /// The zone's SOA; absent only for a file that extends the dynamic domain,
    /// whose SOA roster makes itself.
    pub soa: Option<Record>,
}

impl StaticZone {
    /// Records at `name`, if the name exists in this zone.
    pub fn lookup(&self, name: &LowerName) -> Option<&[Record]> {
        self.records.get(name).map(Vec::as_slice)
    }

    /// Whether `name` exists, holding records or (an empty non-terminal)
    /// only names below it.
    pub fn has_name_at_or_below(&self, name: &LowerName) -> bool {
        self.records.contains_key(name) || self.records.keys().any(|owner| name.zone_of(owner))
    }
}

/// Every static zone, most specific origin first.
#[derive(Debug, Default)]
pub struct StaticZones {
    zones: Vec<StaticZone>,
}

impl StaticZones {
    /// Loads every `*.zone` file in `dir`. A missing directory is no zones; a
    /// file that fails to parse is an error naming the file and line.
    /// `dynamic_domain` may be the origin of one file, which then needs no SOA.
    pub fn load_dir(dir: &Path, dynamic_domain: &Name) -> Result<Self, ZoneError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ZoneError::ReadDir {
                    path: dir.to_owned(),
                    source,
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "zone"))
            .collect();
        paths.sort();
        let mut zones: Vec<StaticZone> = Vec::new();
        for path in paths {
            let zone = load_file(&path, dynamic_domain)?;
            if zones.iter().any(|z| z.origin == zone.origin) {
                return Err(ZoneError::Invalid {
                    path,
                    message: format!("zone {} is defined by another file too", zone.origin),
                });
            }
            zones.push(zone);
        }
        zones.sort_by_key(|z| std::cmp::Reverse(z.origin.num_labels()));
        Ok(Self { zones })
    }

    /// The most specific zone containing `name`.
    pub fn find(&self, name: &LowerName) -> Option<&StaticZone> {
        self.zones.iter().find(|z| z.origin.zone_of(name))
    }

    /// The zone whose origin is exactly `origin`.
    pub fn exact(&self, origin: &LowerName) -> Option<&StaticZone> {
        self.zones.iter().find(|z| &z.origin == origin)
    }

    pub fn iter(&self) -> impl Iterator<Item = &StaticZone> {
        self.zones.iter()
    }
}

/// The origin a file serves: its `$ORIGIN`, else its name without `.zone`
/// (`example.com.zone` serves `example.com.`).
fn origin_from_file_name(path: &Path) -> Option<Name> {
    let stem = path.file_stem()?.to_str()?;
    Name::from_ascii(format!("{}.", stem.trim_end_matches('.'))).ok()
}

fn load_file(path: &Path, dynamic_domain: &Name) -> Result<StaticZone, ZoneError> {
    let text = std::fs::read_to_string(path).map_err(|source| ZoneError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let origin = origin_from_file_name(path);
    let (origin, sets) = Parser::new(text.as_str(), Some(path.to_owned()), origin.clone())
        .parse()
        .map_err(|e| ZoneError::Parse {
            path: path.to_owned(),
            line: failing_line(&text, path, origin.as_ref()),
            message: e.to_string(),
        })?;
    let origin = LowerName::new(&origin);
    let mut records: HashMap<LowerName, Vec<Record>> = HashMap::new();
    let mut soa = None;
    for (key, set) in sets {
        for record in set.records_without_rrsigs() {
            if !origin.zone_of(&LowerName::new(&record.name)) {
                return Err(ZoneError::Invalid {
                    path: path.to_owned(),
                    message: format!("{} is outside the zone {origin}", record.name),
                });
            }
            if record.record_type() == RecordType::SOA {
                if key.name != origin {
                    return Err(ZoneError::Invalid {
                        path: path.to_owned(),
                        message: format!("SOA at {} instead of the zone apex {origin}", key.name),
                    });
                }
                soa = Some(record.clone());
                continue;
            }
            records
                .entry(key.name.clone())
                .or_default()
                .push(record.clone());
        }
    }
    let is_dynamic = Name::from(&origin) == *dynamic_domain;
    if soa.is_none() && !is_dynamic {
        return Err(ZoneError::Invalid {
            path: path.to_owned(),
            message: format!(
                "zone {origin} has no SOA record; only a file of records for the dynamic domain \
                 (dns.domain, now {dynamic_domain}) may leave it out: rename the file \
                 {dynamic_domain}zone if it holds records for that domain, or give the zone an SOA"
            ),
        });
    }
    if let Some(soa) = &soa
        && !matches!(soa.data, RData::SOA(_))
    {
        return Err(ZoneError::Invalid {
            path: path.to_owned(),
            message: "malformed SOA record".into(),
        });
    }
    Ok(StaticZone {
        origin,
        records,
        soa,
    })
}

/// hickory's zone parser does not say where it failed, so find the line:
/// the first line after the longest prefix of the file that still parses.
/// Only runs when a file is already known to be bad.
fn failing_line(text: &str, path: &Path, origin: Option<&Name>) -> usize {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut prefix_len = text.len();
    for count in (0..lines.len()).rev() {
        prefix_len -= lines[count].len();
        let prefix = &text[..prefix_len];
        if Parser::new(prefix, Some(path.to_owned()), origin.cloned())
            .parse()
            .is_ok()
        {
            return count + 1;
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> Name {
        Name::from_ascii("service.local.").expect("name")
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write zone");
    }

    const EXAMPLE: &str = "$TTL 300\n\
@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n\
@ IN NS ns1\n\
ns1 IN A 127.0.0.1\n\
www IN A 192.0.2.10\n";

    #[test]
    fn loads_a_zone_named_after_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "example.com.zone", EXAMPLE);
        let zones = StaticZones::load_dir(dir.path(), &domain()).expect("loads");
        let www = LowerName::from(Name::from_ascii("WWW.example.com.").expect("name"));
        let zone = zones.find(&www).expect("zone found");
        assert!(zone.soa.is_some());
        assert_eq!(zone.lookup(&www).expect("www").len(), 1);
    }

    #[test]
    fn a_parse_error_names_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broken = format!("{EXAMPLE}mail IN A 192.0.2.300\nok IN A 192.0.2.1\n");
        write(dir.path(), "example.com.zone", &broken);
        let err = StaticZones::load_dir(dir.path(), &domain()).expect_err("bad file");
        let message = err.to_string();
        assert!(message.contains("example.com.zone"), "{message}");
        assert!(message.contains("line 6"), "{message}");
    }

    #[test]
    fn only_the_dynamic_domain_may_omit_its_soa() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "service.local.zone",
            "legacy 60 IN A 192.0.2.7\n",
        );
        assert!(StaticZones::load_dir(dir.path(), &domain()).is_ok());
        write(dir.path(), "other.test.zone", "www 60 IN A 192.0.2.7\n");
        let err = StaticZones::load_dir(dir.path(), &domain()).expect_err("no SOA");
        assert!(err.to_string().contains("no SOA"), "{err}");
    }
}
