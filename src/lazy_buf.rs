//! Zeroed fixed buffers whose memory becomes resident only where it is written.
//!
//! The daemon's buffers are sized for the largest message (a 64 KiB GSO packet, its
//! rewritten copy, a full verdict batch), but most packets use a few hundred bytes of
//! them. A buffer from the allocator is cleared whole when it is allocated (the static
//! musl build's `calloc` writes every byte), so all of it counts as resident memory from
//! the start. An anonymous private mapping reads as zeroes until a page is first
//! written, and only written pages become resident: a router pays for what its traffic
//! uses. Where the mapping cannot be made, the buffer comes from the allocator.

use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

pub enum LazyBuf {
    /// `len` bytes mapped at `ptr`, owned by this value.
    Mapped {
        ptr: NonNull<u8>,
        len: usize,
    },
    Heap(Box<[u8]>),
}

impl LazyBuf {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> LazyBuf {
        let Some(length) = NonZeroUsize::new(len) else {
            return LazyBuf::Heap(Box::default());
        };
        // SAFETY: a fresh private anonymous mapping, at an address of the kernel's
        // choosing: it aliases nothing, and it is unmapped only by `drop`.
        #[allow(unsafe_code)]
        let mapped = unsafe {
            mmap_anonymous(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        };
        match mapped {
            Ok(ptr) => LazyBuf::Mapped {
                ptr: ptr.cast(),
                len,
            },
            Err(_) => LazyBuf::Heap(vec![0u8; len].into_boxed_slice()),
        }
    }
}

impl Deref for LazyBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // SAFETY: `ptr` is a live mapping of `len` readable bytes owned by `self`
            // (see `zeroed`), and the shared borrow of `self` keeps it from being
            // written or unmapped meanwhile.
            #[allow(unsafe_code)]
            LazyBuf::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), *len)
            },
            LazyBuf::Heap(b) => b,
        }
    }
}

impl DerefMut for LazyBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            // SAFETY: as in `deref`, with the exclusive borrow of `self` making this
            // the only reference into the mapping.
            #[allow(unsafe_code)]
            LazyBuf::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), *len)
            },
            LazyBuf::Heap(b) => b,
        }
    }
}

impl Drop for LazyBuf {
    fn drop(&mut self) {
        if let LazyBuf::Mapped { ptr, len } = *self {
            // SAFETY: the mapping `zeroed` made, unmapped once; no reference into it
            // outlives `self`.
            #[allow(unsafe_code)]
            let _ = unsafe { munmap(ptr.cast(), len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_zeroes_and_keeps_what_is_written() {
        let mut b = LazyBuf::zeroed(3 * 4096 + 5);
        assert!(matches!(b, LazyBuf::Mapped { .. }));
        assert_eq!(b.len(), 3 * 4096 + 5);
        assert!(b.iter().all(|&x| x == 0));
        b[4096 * 3 + 4] = 7;
        b[0] = 1;
        assert_eq!((b[0], b[4096 * 3 + 4], b[4096]), (1, 7, 0));
        assert_eq!(LazyBuf::zeroed(0).len(), 0);
    }
}
