//! A run's audit log (`runs/RUNID/audit/audit.jsonl`, written by the bundle's daemons), read
//! as it grows by `bottle logs` and the console, and its events as lines for people.

use anyhow::{Context, Result, bail};

use super::record::{self, RunRecord};
use crate::store::Store;

/// A run's audit log (`runs/RUNID/audit/audit.jsonl`), read as it grows.
pub struct AuditReader {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// The reader starts mid-file: what comes before the first newline is a cut line.
    cut: bool,
}

impl AuditReader {
    /// The log of the run `id` names (a run id or a unique prefix of one), live or ended.
    pub fn open(store: &Store, id: &str) -> Result<AuditReader> {
        let id = id.trim();
        let mut found: Vec<String> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(record::runs_dir(store)) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if !id.is_empty() && name.starts_with(id) && ent.path().is_dir() {
                    found.push(name);
                }
            }
        }
        found.sort();
        let run_id = match found.len() {
            0 => bail!(
                "no run {id:?} in {} (an ended run's log stays until `bottle gc`); `bottle ps` lists the live runs",
                store.root().display()
            ),
            1 => found.remove(0),
            n => bail!(
                "{id:?} matches {n} runs ({}); give more of the run id",
                found.join(", ")
            ),
        };
        let dir = record::run_dir(store, &run_id);
        let path = dir
            .join(crate::daemons::audit::AUDIT_RUN_DIR)
            .join(crate::daemons::audit::AUDIT_FILE);
        Ok(AuditReader {
            dir,
            path,
            offset: 0,
            partial: Vec::new(),
            cut: false,
        })
    }

    /// Starts at the last `max_bytes` of the log (its first whole line there) instead of its
    /// beginning: for a reader that shows the recent lines of a long log.
    pub fn from_tail(mut self, max_bytes: u64) -> AuditReader {
        let len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if len > max_bytes {
            // One byte before: when it is a newline, the line after it is whole and kept.
            self.offset = len - max_bytes - 1;
            self.cut = true;
        }
        self
    }

    /// Whether the run is over (no live record left).
    pub fn ended(&self) -> bool {
        let record = self.dir.join(record::RECORD_FILE);
        match RunRecord::load(&record) {
            Ok(r) => !r.is_live(),
            Err(_) => true,
        }
    }

    /// The events written since the last read (a line still being written waits).
    pub fn read_new(&mut self) -> Result<Vec<crate::daemons::audit::Event>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()));
            }
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        let n = file.read_to_end(&mut bytes)?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&bytes);
        if self.cut {
            match self.partial.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    self.partial.drain(..=end);
                    self.cut = false;
                }
                None => return Ok(Vec::new()),
            }
        }
        let mut events = Vec::new();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            match serde_json::from_slice(&line) {
                Ok(e) => events.push(e),
                Err(e) => tracing::warn!("skipping an unreadable audit line: {e}"),
            }
        }
        Ok(events)
    }
}

/// One audit event as a line for people.
pub fn audit_line(e: &crate::daemons::audit::Event) -> String {
    let rule = e.rule.as_deref().unwrap_or("-");
    let decision = e.decision.name();
    // A git-gate line: the ref update after the repository's path.
    let git = e
        .git
        .as_ref()
        .map(|g| {
            use crate::daemons::audit::short;
            format!(" {} {}..{}", g.ref_name, short(&g.old), short(&g.new))
        })
        .unwrap_or_default();
    format!(
        "{}  {:<7} {}:{}{}{git}  {decision} ({rule})  {}  sent {} received {}  {} ms",
        utc(e.time_ms),
        e.method,
        e.host,
        e.port,
        e.path,
        e.status,
        indicatif::HumanBytes(e.bytes_out),
        indicatif::HumanBytes(e.bytes_in),
        e.duration_ms
    )
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
fn utc(ms: u64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    i64::try_from(ms)
        .ok()
        .and_then(|ms| {
            time::OffsetDateTime::UNIX_EPOCH.checked_add(time::Duration::milliseconds(ms))
        })
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_else(|| format!("{ms} ms after the epoch"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tail_starts_at_a_whole_line() {
        use crate::daemons::audit::{Decision, Event};
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::store::Store::new(tmp.path());
        let dir = super::record::run_dir(&store, "r1").join(crate::daemons::audit::AUDIT_RUN_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let mut e = Event::granted("r1", "a.test", "x");
        e.decision = Decision::Allowed;
        let mut text = String::new();
        for host in ["one.test", "two.test", "three.test"] {
            e.host = host.into();
            text.push_str(&serde_json::to_string(&e).unwrap());
            text.push('\n');
        }
        std::fs::write(dir.join(crate::daemons::audit::AUDIT_FILE), &text).unwrap();
        let last = text.lines().last().unwrap().len() as u64 + 1;
        let hosts = |max: u64| -> Vec<String> {
            let mut r = super::AuditReader::open(&store, "r1")
                .unwrap()
                .from_tail(max);
            r.read_new().unwrap().into_iter().map(|e| e.host).collect()
        };
        assert_eq!(hosts(last + 5), ["three.test"]);
        assert_eq!(hosts(last), ["three.test"]);
        assert_eq!(hosts(1 << 20).len(), 3);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_795_981_234_567), "2026-11-29T19:40:34.567Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            super::utc(u64::MAX),
            format!("{} ms after the epoch", u64::MAX)
        );
    }
}
