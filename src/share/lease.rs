//! Leases between `bottle push` and `bottle gc --remote` on one cache: who may remove what,
//! and when.
//!
//! A lease is an object under `locks/` holding `ID SECONDS`: a random id its taker made and
//! the time it was taken. Each process removes only the lease it holds, found by that id
//! (read, compare, delete); a lease older than [`STALE_AFTER`] is one a killed process left,
//! and is ignored.
//!
//! - A **push** writes `locks/push-ID`, then reads `locks/gc`: a fresh one stops the push
//!   before it uploads anything. Before it writes the manifest (which makes the entry
//!   visible, and its success reported), it checks again that every chunk and component it
//!   skipped as "already there" still is, and that no gc lease appeared; then it removes its
//!   own lease.
//! - A **gc** reads `locks/gc` (a fresh one of another gc stops it), writes its own, reads it
//!   back (another gc that wrote in between wins: this one stops, leaving that lease alone),
//!   then lists `locks/push-*`: a fresh one stops it (its own lease removed). Only then does
//!   it read what to keep and remove the rest; at the end it removes `locks/gc` only if it
//!   still holds its id.
//! - A **dry run** takes no lease and removes none: it only reads.
//!
//! Each side writes its lease before it reads the other's, so with the read-after-write
//! consistency of a folder, nginx and S3 at least one of a push and a gc sees the other.
//! The interleavings this survives: a gc, then a dry run or a second gc (refused) while it
//! works, then a push: the push sees the first gc's lease, which neither the dry run nor the
//! refused gc removed, and stops. A push under way, then a gc: the gc sees the push's lease
//! and stops. A gc and a push starting at once: the later reader sees the other's lease. A
//! gc removing chunks after a push checked them (a lease gone stale, or an older bottle's gc
//! that ignores ids): the push's final check finds them missing and fails, rather than
//! reporting an entry that cannot be pulled. What remains: between a gc's compare and its
//! delete of its own lease another gc cannot have taken over (it would have found the first
//! one's fresh lease), but a lease older than [`STALE_AFTER`] is taken over by design.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::bound::Bound;
use super::cache::Cache;
use super::error::ShareError;
use super::layout::LAYOUT;

/// A lease older than this was left by a killed push or gc.
pub const STALE_AFTER: Duration = Duration::from_secs(3 * 3600);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn locks() -> String {
    format!("{LAYOUT}/locks/")
}
pub fn gc_key() -> String {
    format!("{LAYOUT}/locks/gc")
}

/// A new random id: 16 hex digits.
fn new_id() -> String {
    let mut id = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .expect("the system's randomness is available");
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A lease as read: its holder's id (empty for an older bottle's lease) and its age.
#[derive(Debug)]
pub struct Held {
    pub id: String,
    pub since: u64,
}

impl Held {
    pub fn fresh(&self) -> bool {
        now().saturating_sub(self.since) < STALE_AFTER.as_secs()
    }
}

/// The lease at `key`, if any.
pub async fn read(cache: &Cache, key: &str) -> Result<Option<Held>, ShareError> {
    let Some(b) = cache.get(key, Bound::LEASE).await? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&b);
    let mut words = text.split_whitespace();
    let held = match (words.next(), words.next()) {
        (Some(id), Some(t)) => Held {
            id: id.to_string(),
            since: t.parse().unwrap_or(0),
        },
        (Some(t), None) => Held {
            id: String::new(),
            since: t.parse().unwrap_or(0),
        },
        _ => Held {
            id: String::new(),
            since: 0,
        },
    };
    Ok(Some(held))
}

/// A lease this process holds: removed by [`Lease::release`] only while it is still its own.
pub struct Lease {
    pub key: String,
    pub id: String,
}

impl Lease {
    /// Writes a new lease at `key`.
    async fn write(cache: &Cache, key: String) -> Result<Lease, ShareError> {
        let lease = Lease { key, id: new_id() };
        let text = format!("{} {}\n", lease.id, now());
        cache.put(&lease.key, Bytes::from(text)).await?;
        Ok(lease)
    }

    /// Whether the lease at its key is still this one.
    pub async fn held(&self, cache: &Cache) -> Result<bool, ShareError> {
        Ok(read(cache, &self.key)
            .await?
            .is_some_and(|h| h.id == self.id))
    }

    /// Removes the lease if it is still this one (compare, then delete).
    pub async fn release(self, cache: &Cache) {
        if let Ok(true) = self.held(cache).await {
            let _ = cache.delete(&self.key).await;
        }
    }

    /// Takes a push's lease, or refuses while a gc runs.
    pub async fn push(cache: &Cache) -> Result<Lease, ShareError> {
        let lease = Lease::write(cache, format!("{LAYOUT}/locks/push-{}", new_id())).await?;
        if let Some(e) = gc_under_way(cache).await? {
            lease.release(cache).await;
            return Err(e);
        }
        Ok(lease)
    }

    /// Takes the gc lease, or refuses while another gc or a push runs.
    pub async fn gc(cache: &Cache) -> Result<Lease, ShareError> {
        if let Some(e) = gc_under_way(cache).await? {
            return Err(e);
        }
        let lease = Lease::write(cache, gc_key()).await?;
        if !lease.held(cache).await? {
            // Another gc wrote after this one: it goes on, this one stops.
            return Err(stopped(
                cache,
                format!(
                    "another `bottle gc --remote` took the lease {} at the same time; run gc again once it is done",
                    gc_key()
                ),
            ));
        }
        for key in cache.list(&locks()).await? {
            // Any `push-*` is read as a push's lease (reading is harmless); none is removed.
            let push = key
                .strip_prefix(&format!("{LAYOUT}/locks/push-"))
                .is_some_and(|id| !id.is_empty() && !id.contains('/'));
            if push && read(cache, &key).await?.is_some_and(|h| h.fresh()) {
                lease.release(cache).await;
                return Err(stopped(
                    cache,
                    format!("a push is under way (lease {key}); run gc again once it is done"),
                ));
            }
        }
        Ok(lease)
    }
}

fn stopped(cache: &Cache, what: String) -> ShareError {
    ShareError::Stopped {
        url: cache.url(),
        what,
    }
}

/// The error to stop with when a fresh gc lease is in the cache.
pub async fn gc_under_way(cache: &Cache) -> Result<Option<ShareError>, ShareError> {
    Ok(read(cache, &gc_key()).await?.filter(Held::fresh).map(|_| {
        stopped(
            cache,
            format!(
                "`bottle gc --remote` is under way (lease {}); try again once it is done",
                gc_key()
            ),
        )
    }))
}
