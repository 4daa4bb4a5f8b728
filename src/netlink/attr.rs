//! Netlink attributes (struct nlattr): a bounds-checked reader and a writer that
//! appends to a fixed buffer.

use super::{Error, Result};

pub const NLA_HDRLEN: usize = 4;
pub const NLA_F_NESTED: u16 = 1 << 15;
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// Round up to the 4-byte netlink alignment.
pub const fn align(len: usize) -> usize {
    // Saturating: a length read from the wire may be near usize::MAX on 32-bit
    // targets; the caller's bounds check then fails instead of the addition.
    len.saturating_add(3) & !3
}

/// One attribute: its type (flags stripped) and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    pub kind: u16,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn u8(&self) -> Result<u8> {
        self.payload.first().copied().ok_or(Error::Truncated)
    }

    pub fn be16(&self) -> Result<u16> {
        let b = self.payload.get(..2).ok_or(Error::Truncated)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn be32(&self) -> Result<u32> {
        let b = self.payload.get(..4).ok_or(Error::Truncated)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated (or unterminated) string payload, up to the first NUL.
    pub fn str(&self) -> Result<&'a str> {
        let end = self
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.payload.len());
        let bytes = self.payload.get(..end).ok_or(Error::Truncated)?;
        core::str::from_utf8(bytes).map_err(|_| Error::Malformed("string is not UTF-8"))
    }

    pub fn nested(&self) -> Attrs<'a> {
        Attrs::new(self.payload)
    }
}

/// Iterator over a run of attributes. Yields an error (once) on a malformed header
/// and then stops.
#[derive(Clone, Copy, Debug)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Attrs { rest: buf }
    }

    /// Index the attributes by type into `N` slots (types >= N are ignored; a later
    /// duplicate wins, as in the kernel's nla_parse).
    pub fn table<const N: usize>(self) -> Result<[Option<Attr<'a>>; N]> {
        let mut table = [None; N];
        for attr in self {
            let attr = attr?;
            if let Some(slot) = table.get_mut(usize::from(attr.kind)) {
                *slot = Some(attr);
            }
        }
        Ok(table)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        // Trailing padding shorter than a header is legal.
        if self.rest.len() < NLA_HDRLEN {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([self.rest[0], self.rest[1]]));
        let kind = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(Error::Truncated));
        }
        let payload = &self.rest[NLA_HDRLEN..len];
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(Ok(Attr { kind, payload }))
    }
}

/// Appends netlink messages and attributes to a fixed buffer.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

/// Position of an open nested attribute or message, closed with `end_*`.
#[must_use]
#[derive(Clone, Copy, Debug)]
pub struct Mark(usize);

impl Mark {
    pub(crate) fn offset(self) -> usize {
        self.0
    }
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Reserve `n` bytes (zeroed, plus zeroed alignment padding) and return their offset.
    pub(crate) fn reserve(&mut self, n: usize) -> Result<usize> {
        let start = self.len;
        let end = start.checked_add(align(n)).ok_or(Error::BufferFull)?;
        let region = self.buf.get_mut(start..end).ok_or(Error::BufferFull)?;
        region.fill(0);
        self.len = end;
        Ok(start)
    }

    pub(crate) fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        let end = offset.checked_add(bytes.len()).ok_or(Error::BufferFull)?;
        self.buf
            .get_mut(offset..end)
            .ok_or(Error::BufferFull)?
            .copy_from_slice(bytes);
        Ok(())
    }

    /// Append raw bytes, aligned.
    pub fn put_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let at = self.reserve(bytes.len())?;
        self.write_at(at, bytes)
    }

    pub fn put(&mut self, kind: u16, payload: &[u8]) -> Result<()> {
        let total = NLA_HDRLEN + payload.len();
        let len = u16::try_from(total).map_err(|_| Error::BufferFull)?;
        let at = self.reserve(total)?;
        self.write_at(at, &len.to_ne_bytes())?;
        self.write_at(at + 2, &kind.to_ne_bytes())?;
        self.write_at(at + NLA_HDRLEN, payload)
    }

    pub fn put_u8(&mut self, kind: u16, v: u8) -> Result<()> {
        self.put(kind, &[v])
    }

    pub fn put_be16(&mut self, kind: u16, v: u16) -> Result<()> {
        self.put(kind, &v.to_be_bytes())
    }

    pub fn put_be32(&mut self, kind: u16, v: u32) -> Result<()> {
        self.put(kind, &v.to_be_bytes())
    }

    /// A NUL-terminated string attribute.
    pub fn put_str(&mut self, kind: u16, s: &str) -> Result<()> {
        let total = NLA_HDRLEN + s.len() + 1;
        let len = u16::try_from(total).map_err(|_| Error::BufferFull)?;
        let at = self.reserve(total)?;
        self.write_at(at, &len.to_ne_bytes())?;
        self.write_at(at + 2, &kind.to_ne_bytes())?;
        self.write_at(at + NLA_HDRLEN, s.as_bytes())
        // the terminating NUL is already there: reserve() zeroes.
    }

    pub fn begin_nested(&mut self, kind: u16) -> Result<Mark> {
        let at = self.reserve(NLA_HDRLEN)?;
        self.write_at(at + 2, &(kind | NLA_F_NESTED).to_ne_bytes())?;
        Ok(Mark(at))
    }

    pub fn end_nested(&mut self, mark: Mark) -> Result<()> {
        let len = u16::try_from(self.len - mark.0).map_err(|_| Error::BufferFull)?;
        self.write_at(mark.0, &len.to_ne_bytes())
    }

    /// Drop everything written since `mark` (e.g. a message that did not fit).
    pub fn rewind(&mut self, mark: Mark) {
        self.len = mark.0.min(self.len);
    }

    pub(crate) fn mark_here(&self) -> Mark {
        Mark(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back_nested_attributes() {
        let mut buf = [0xAAu8; 128];
        let mut w = Writer::new(&mut buf);
        w.put_str(1, "ftp").unwrap();
        let n = w.begin_nested(2).unwrap();
        w.put_be16(1, 2).unwrap();
        w.put_u8(2, 6).unwrap();
        w.end_nested(n).unwrap();
        w.put_be32(3, 7).unwrap();
        let bytes = w.as_slice();
        assert_eq!(bytes.len(), 8 + (4 + 8 + 8) + 8);
        // "ftp\0" is exactly 4 bytes: header len 8. The header is in host byte order
        // (big-endian on MIPS routers).
        let (len, kind) = (8u16.to_ne_bytes(), 1u16.to_ne_bytes());
        assert_eq!(
            &bytes[..8],
            &[len[0], len[1], kind[0], kind[1], b'f', b't', b'p', 0]
        );

        let t: [Option<Attr>; 4] = Attrs::new(bytes).table().unwrap();
        assert_eq!(t[1].unwrap().str().unwrap(), "ftp");
        assert_eq!(t[3].unwrap().be32().unwrap(), 7);
        let inner: [Option<Attr>; 3] = t[2].unwrap().nested().table().unwrap();
        assert_eq!(inner[1].unwrap().be16().unwrap(), 2);
        assert_eq!(inner[2].unwrap().u8().unwrap(), 6);
    }

    #[test]
    fn padding_is_zeroed() {
        let mut buf = [0xFFu8; 16];
        let mut w = Writer::new(&mut buf);
        w.put_u8(5, 9).unwrap();
        let (len, kind) = (5u16.to_ne_bytes(), 5u16.to_ne_bytes());
        assert_eq!(
            w.as_slice(),
            &[len[0], len[1], kind[0], kind[1], 9, 0, 0, 0]
        );
    }

    #[test]
    fn rejects_overlong_attribute() {
        let bytes = [12u8, 0, 1, 0, 1, 2, 3, 4];
        let mut it = Attrs::new(&bytes);
        assert_eq!(it.next(), Some(Err(Error::Truncated)));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn rejects_header_shorter_than_itself() {
        let bytes = [2u8, 0, 1, 0, 0, 0, 0, 0];
        assert!(Attrs::new(&bytes).table::<4>().is_err());
    }

    #[test]
    fn writer_reports_full_buffer() {
        let mut buf = [0u8; 6];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.put_be32(1, 1), Err(Error::BufferFull));
    }

    #[test]
    fn short_payload_accessors_fail_cleanly() {
        let a = Attr {
            kind: 1,
            payload: &[1],
        };
        assert_eq!(a.be16(), Err(Error::Truncated));
        assert_eq!(a.be32(), Err(Error::Truncated));
        assert_eq!(a.u8(), Ok(1));
    }
}
