//! The last private data the daemon wrote for each recently helped conntrack.
//!
//! The kernel copies a conntrack's private data into every queued packet at queue time.
//! With two packets of one connection in flight (both directions, a retransmission,
//! a burst read in one batch) the second carries the copy from before the first one's
//! verdict, so without this cache its verdict would overwrite the first update (FTP
//! would forget a line start; SIP would forget a dialog).
//!
//! Only this daemon writes the private data of its helpers' conntracks, so the copy it
//! wrote last is never older than the one a packet carries: within a short time to live
//! the cached copy wins. The time to live bounds the one case where the kernel's copy is
//! the newer one: a conntrack that died and was replaced by a new one with the same id
//! and tuple (a reused slab object); TCP's TIME_WAIT keeps that from happening within
//! seconds. After a restart the cache is empty and the kernel's copy is used, as before.
//!
//! Fixed size, direct-mapped by conntrack id; a live entry pushed out by another
//! conntrack is counted as an eviction (reported by `status`).

use std::time::{Duration, Instant};

use crate::helpers::PRIVATE_DATA_MAX;
use crate::model::Tuple;

/// Entries kept (a power of two: the index is the id's low bits). 256 conntracks with
/// packets in flight at once is far beyond what one queue reader sees between verdicts.
pub const PRIVATE_CACHE_ENTRIES: usize = 256;
const _: () = assert!(PRIVATE_CACHE_ENTRIES.is_power_of_two());

/// How long a written copy outranks the kernel's. Packets wait in the queue for
/// milliseconds; anything older than this was written long before the packet was queued.
pub const PRIVATE_CACHE_TTL: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: u32,
    orig: Tuple,
    written: Instant,
    len: u8,
    data: [u8; PRIVATE_DATA_MAX],
}

/// See the module documentation.
pub struct PrivateCache {
    entries: Box<[Option<Entry>]>,
    /// Packets whose private data came from the cache because the kernel's copy was
    /// older.
    pub used: u64,
    /// Live entries replaced by another conntrack's.
    pub evictions: u64,
}

impl Default for PrivateCache {
    fn default() -> Self {
        Self::new()
    }
}

impl PrivateCache {
    /// Allocates its fixed table once (at start, not on the packet path).
    pub fn new() -> PrivateCache {
        PrivateCache {
            entries: vec![None; PRIVATE_CACHE_ENTRIES].into_boxed_slice(),
            used: 0,
            evictions: 0,
        }
    }

    fn index(id: u32) -> usize {
        // Kernel conntrack ids are hashes; fold the high half in anyway.
        ((id ^ (id >> 16)) as usize) & (PRIVATE_CACHE_ENTRIES - 1)
    }

    /// The private data to run the helper with: the copy this daemon wrote last for the
    /// conntrack when it is recent and differs from the kernel's `queued` copy, else
    /// `queued`. A conntrack without an id (never the case on the kernels we support) is
    /// not cached.
    pub fn newest<'a>(
        &'a mut self,
        id: Option<u32>,
        orig: &Tuple,
        queued: Option<&'a [u8]>,
        now: Instant,
    ) -> Option<&'a [u8]> {
        let Some(id) = id else {
            return queued;
        };
        let Some(Some(e)) = self.entries.get(Self::index(id)) else {
            return queued;
        };
        if e.id != id
            || e.orig != *orig
            || now.saturating_duration_since(e.written) > PRIVATE_CACHE_TTL
        {
            return queued;
        }
        let cached = e.data.get(..usize::from(e.len)).unwrap_or(&[]);
        if queued != Some(cached) {
            self.used += 1;
        }
        Some(cached)
    }

    /// Remember what was just written (with a verdict or over ctnetlink).
    pub fn record(&mut self, id: Option<u32>, orig: &Tuple, data: &[u8], now: Instant) {
        let Some(id) = id else {
            return;
        };
        let len = data.len().min(PRIVATE_DATA_MAX);
        let mut copy = [0u8; PRIVATE_DATA_MAX];
        if let (Some(dst), Some(src)) = (copy.get_mut(..len), data.get(..len)) {
            dst.copy_from_slice(src);
        }
        let Some(slot) = self.entries.get_mut(Self::index(id)) else {
            return;
        };
        if let Some(old) = slot
            && (old.id != id || old.orig != *orig)
            && now.saturating_duration_since(old.written) <= PRIVATE_CACHE_TTL
        {
            self.evictions += 1;
        }
        *slot = Some(Entry {
            id,
            orig: *orig,
            written: now,
            len: len as u8,
            data: copy,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IPPROTO_TCP;

    fn tuple(port: u16) -> Tuple {
        Tuple {
            src: [192, 0, 2, 2].into(),
            dst: [198, 51, 100, 2].into(),
            proto: IPPROTO_TCP,
            src_port: port,
            dst_port: 21,
        }
    }

    #[test]
    fn the_written_copy_wins_over_an_older_queued_one() {
        let mut c = PrivateCache::new();
        let t0 = Instant::now();
        let old = [1u8; 32];
        let new = [2u8; 32];
        assert_eq!(c.newest(Some(7), &tuple(1), Some(&old), t0), Some(&old[..]));
        c.record(Some(7), &tuple(1), &new, t0);
        assert_eq!(c.newest(Some(7), &tuple(1), Some(&old), t0), Some(&new[..]));
        assert_eq!(c.used, 1);
        // The kernel has caught up: same bytes, nothing substituted.
        assert_eq!(c.newest(Some(7), &tuple(1), Some(&new), t0), Some(&new[..]));
        assert_eq!(c.used, 1);
        // Fresh private area (None) while the first update is in flight.
        assert_eq!(c.newest(Some(7), &tuple(1), None, t0), Some(&new[..]));
    }

    #[test]
    fn another_conntrack_or_an_old_entry_is_not_used() {
        let mut c = PrivateCache::new();
        let t0 = Instant::now();
        let queued = [1u8; 32];
        c.record(Some(7), &tuple(1), &[2u8; 32], t0);
        // Same id, other tuple (a reused id): the kernel's copy.
        assert_eq!(
            c.newest(Some(7), &tuple(2), Some(&queued), t0),
            Some(&queued[..])
        );
        // Same slot, other id.
        let other = 7 + PRIVATE_CACHE_ENTRIES as u32;
        assert_eq!(PrivateCache::index(other), PrivateCache::index(7));
        assert_eq!(
            c.newest(Some(other), &tuple(1), Some(&queued), t0),
            Some(&queued[..])
        );
        // Past the time to live.
        let later = t0 + PRIVATE_CACHE_TTL + Duration::from_millis(1);
        assert_eq!(
            c.newest(Some(7), &tuple(1), Some(&queued), later),
            Some(&queued[..])
        );
        // No id: not cached.
        c.record(None, &tuple(3), &[3u8; 32], t0);
        assert_eq!(c.newest(None, &tuple(3), None, t0), None);
    }

    #[test]
    fn a_live_entry_pushed_out_is_counted_an_expired_one_is_not() {
        let mut c = PrivateCache::new();
        let t0 = Instant::now();
        let other = 7 + PRIVATE_CACHE_ENTRIES as u32;
        c.record(Some(7), &tuple(1), &[2u8; 32], t0);
        c.record(Some(7), &tuple(1), &[3u8; 32], t0);
        assert_eq!(c.evictions, 0, "the same conntrack updates its entry");
        c.record(Some(other), &tuple(1), &[4u8; 32], t0);
        assert_eq!(c.evictions, 1);
        let later = t0 + PRIVATE_CACHE_TTL + Duration::from_millis(1);
        c.record(Some(7), &tuple(1), &[5u8; 32], later);
        assert_eq!(c.evictions, 1);
    }

    #[test]
    fn short_and_empty_private_areas_round_trip() {
        let mut c = PrivateCache::new();
        let t0 = Instant::now();
        c.record(Some(1), &tuple(1), &[9, 9, 9], t0);
        assert_eq!(
            c.newest(Some(1), &tuple(1), None, t0),
            Some(&[9u8, 9, 9][..])
        );
        c.record(Some(1), &tuple(1), &[], t0);
        assert_eq!(c.newest(Some(1), &tuple(1), None, t0), Some(&[][..]));
    }
}
