//! A bounded per-helper store for state that outlives a packet but does not fit the
//! conntrack's 32 bytes of private data (SIP: a dialog's media expectations, to delete
//! them on BYE). The daemon owns one per helper slot and hands it to every run of that
//! helper; `replay` keeps one per helper too. A helper that keeps nothing here (FTP,
//! TFTP) gets a store without a table ([`Store::default`]), which allocates nothing.
//!
//! Fixed capacity, allocated once when the slot is built; an insertion into a full table
//! evicts the entry written longest ago, and evictions are counted (`cthelperd status`).
//! Values are bytes, encoded and decoded by the helper like its private data, so a
//! daemon restart that loses the store loses only what the helper can live without.

/// Entries of a helper's store, for a helper that keeps state here.
pub const STORE_ENTRIES: usize = 256;

/// Largest value one entry holds.
pub const STORE_VALUE_MAX: usize = 128;

// Lengths are kept in a byte.
const _: () = assert!(STORE_VALUE_MAX <= u8::MAX as usize);

/// What an entry is found by: the conntrack it belongs to and a helper-chosen tag (e.g.
/// a hash of SIP's Call-ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreKey {
    pub conntrack: u32,
    pub tag: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: StoreKey,
    /// When it was last written, in insertions since the store was built.
    written: u64,
    len: u8,
    value: [u8; STORE_VALUE_MAX],
}

/// Why a value was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// Longer than [`STORE_VALUE_MAX`].
    TooLong(usize),
    /// The store has no table (the helper declared none).
    NoTable,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Store {
    entries: Box<[Option<Entry>]>,
    clock: u64,
    /// Entries pushed out by newer ones because the table was full.
    pub evictions: u64,
    /// Buffers for messages split across TCP segments, for a helper whose registry
    /// entry asks for them (SIP over TCP); allocated with the store.
    pub streams: Option<crate::helpers::sip::stream::Pool>,
}

impl Store {
    /// A store of `capacity` entries, allocated now (at start, not on the packet path).
    pub fn new(capacity: usize) -> Store {
        Store {
            entries: vec![None; capacity].into_boxed_slice(),
            clock: 0,
            evictions: 0,
            streams: None,
        }
    }

    /// The store a built-in helper's registry entry asks for: its table, and stream
    /// buffers where it reassembles TCP messages.
    pub fn for_helper(builtin: &crate::helpers::registry::Builtin) -> Store {
        Store {
            streams: builtin
                .stream_buffers
                .then(crate::helpers::sip::stream::Pool::new),
            ..Store::new(builtin.store_entries)
        }
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Entries in use.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn position(&self, key: StoreKey) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.key == key))
    }

    /// The value stored under `key`.
    pub fn get(&self, key: StoreKey) -> Option<&[u8]> {
        let e = self.entries.get(self.position(key)?)?.as_ref()?;
        e.value.get(..usize::from(e.len))
    }

    /// Store `value` under `key`, replacing what was there; a new key takes a free entry
    /// or, when the table is full, the one written longest ago (an eviction).
    pub fn insert(&mut self, key: StoreKey, value: &[u8]) -> Result<(), StoreError> {
        let len = u8::try_from(value.len())
            .ok()
            .filter(|n| usize::from(*n) <= STORE_VALUE_MAX)
            .ok_or(StoreError::TooLong(value.len()))?;
        let index = match self.position(key) {
            Some(i) => i,
            None => match self.entries.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    let oldest = self
                        .entries
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.as_ref().map_or(0, |e| e.written))
                        .map(|(i, _)| i)
                        .ok_or(StoreError::NoTable)?;
                    self.evictions += 1;
                    oldest
                }
            },
        };
        let slot = self.entries.get_mut(index).ok_or(StoreError::NoTable)?;
        let mut entry = Entry {
            key,
            written: self.clock,
            len,
            value: [0; STORE_VALUE_MAX],
        };
        if let Some(dst) = entry.value.get_mut(..value.len()) {
            dst.copy_from_slice(value);
        }
        *slot = Some(entry);
        self.clock += 1;
        Ok(())
    }

    /// Forget `key`; whether it was there.
    pub fn remove(&mut self, key: StoreKey) -> bool {
        match self.position(key).and_then(|i| self.entries.get_mut(i)) {
            Some(slot) => slot.take().is_some(),
            None => false,
        }
    }

    /// Forget every entry of a conntrack; how many there were.
    pub fn remove_conntrack(&mut self, conntrack: u32) -> usize {
        let mut n = 0;
        for slot in self.entries.iter_mut() {
            if slot.as_ref().is_some_and(|e| e.key.conntrack == conntrack) {
                *slot = None;
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(conntrack: u32, tag: u64) -> StoreKey {
        StoreKey { conntrack, tag }
    }

    #[test]
    fn a_store_without_a_table_stores_nothing() {
        let mut s = Store::default();
        assert_eq!(s.capacity(), 0);
        assert_eq!(s.insert(key(1, 1), b"x"), Err(StoreError::NoTable));
        assert_eq!(s.get(key(1, 1)), None);
        assert_eq!(s.evictions, 0);
    }

    #[test]
    fn values_are_replaced_removed_and_bounded() {
        let mut s = Store::new(4);
        s.insert(key(1, 10), b"first").unwrap();
        s.insert(key(1, 10), b"second").unwrap();
        assert_eq!(s.get(key(1, 10)), Some(&b"second"[..]));
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(key(2, 10)), None, "the conntrack is part of the key");
        let big = [7u8; STORE_VALUE_MAX];
        s.insert(key(2, 10), &big).unwrap();
        assert_eq!(s.get(key(2, 10)), Some(&big[..]));
        assert_eq!(
            s.insert(key(3, 1), &[0; STORE_VALUE_MAX + 1]),
            Err(StoreError::TooLong(STORE_VALUE_MAX + 1))
        );
        assert!(s.remove(key(1, 10)));
        assert!(!s.remove(key(1, 10)));
        s.insert(key(2, 11), b"").unwrap();
        assert_eq!(s.get(key(2, 11)), Some(&b""[..]));
        assert_eq!(s.remove_conntrack(2), 2);
        assert!(s.is_empty());
        assert_eq!(s.evictions, 0);
    }

    #[test]
    fn a_full_store_evicts_the_entry_written_longest_ago_and_counts_it() {
        let mut s = Store::new(STORE_ENTRIES);
        for i in 0..STORE_ENTRIES as u64 {
            s.insert(key(9, i), &i.to_be_bytes()).unwrap();
        }
        assert_eq!(s.evictions, 0);
        // Rewriting the oldest makes it the newest: tag 1 is now the oldest.
        s.insert(key(9, 0), b"again").unwrap();
        s.insert(key(9, 1000), b"new").unwrap();
        assert_eq!(s.evictions, 1);
        assert_eq!(s.get(key(9, 1)), None, "evicted");
        assert_eq!(s.get(key(9, 0)), Some(&b"again"[..]));
        assert_eq!(s.get(key(9, 1000)), Some(&b"new"[..]));
        assert_eq!(s.len(), STORE_ENTRIES);
        s.insert(key(9, 1001), b"newer").unwrap();
        assert_eq!(s.get(key(9, 2)), None);
        assert_eq!(s.evictions, 2);
    }
}
