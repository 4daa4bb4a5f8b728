//! Bounded scanning helpers for line-oriented ASCII protocols (FTP, SIP).
//!
//! Everything works on byte slices (payloads are not guaranteed UTF-8), returns
//! positions relative to the slice given, and never reads past it.

use super::Error;

/// Position of the first `b` in `hay`.
#[inline]
pub fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
    hay.iter().position(|&c| c == b)
}

/// Position of the first LF.
#[inline]
pub fn find_lf(hay: &[u8]) -> Option<usize> {
    find_byte(hay, b'\n')
}

/// Position of the first CRLF (the CR's index).
pub fn find_crlf(hay: &[u8]) -> Option<usize> {
    hay.windows(2).position(|w| w == b"\r\n")
}

/// Split off the first line. Returns (line without its CRLF/LF, rest after the LF), or
/// `None` when no LF terminates a line inside `buf`.
pub fn split_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let lf = find_lf(buf)?;
    let line = buf.get(..lf)?;
    let rest = buf.get(lf + 1..)?;
    Some((trim_cr(line), rest))
}

/// Drop one trailing CR.
pub fn trim_cr(line: &[u8]) -> &[u8] {
    match line.split_last() {
        Some((b'\r', head)) => head,
        _ => line,
    }
}

/// Where `part` (a sub-slice of `whole`, e.g. what a parser returned) lies inside
/// `whole`, as a byte range; `None` if it is not inside. Compares addresses only.
pub fn range_within(whole: &[u8], part: &[u8]) -> Option<core::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

/// ASCII case-insensitive "starts with".
pub fn starts_with_ignore_case(buf: &[u8], prefix: &[u8]) -> bool {
    buf.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Number of leading spaces and tabs.
pub fn count_spaces(buf: &[u8]) -> usize {
    buf.iter().take_while(|&&c| c == b' ' || c == b'\t').count()
}

/// Skip leading spaces and tabs.
pub fn skip_spaces(buf: &[u8]) -> &[u8] {
    buf.get(count_spaces(buf)..).unwrap_or(&[])
}

/// Number of leading ASCII digits.
pub fn count_digits(buf: &[u8]) -> usize {
    buf.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// Parse leading decimal digits as a number no larger than `max`. Returns the value and
/// how many bytes were consumed. At least one digit is required; leading zeros are
/// accepted (the stops at the first non-digit, so "0009" is 9, as FTP peers write it).
pub fn parse_decimal(buf: &[u8], max: u32) -> Result<(u32, usize), Error> {
    let n = count_digits(buf);
    if n == 0 {
        return Err(Error::Syntax);
    }
    let mut value: u32 = 0;
    for &c in buf.iter().take(n) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(c - b'0')))
            .filter(|&v| v <= max)
            .ok_or(Error::Overflow)?;
    }
    Ok((value, n))
}

pub fn parse_u8(buf: &[u8]) -> Result<(u8, usize), Error> {
    let (v, n) = parse_decimal(buf, u32::from(u8::MAX))?;
    Ok((u8::try_from(v).map_err(|_| Error::Overflow)?, n))
}

pub fn parse_u16(buf: &[u8]) -> Result<(u16, usize), Error> {
    let (v, n) = parse_decimal(buf, u32::from(u16::MAX))?;
    Ok((u16::try_from(v).map_err(|_| Error::Overflow)?, n))
}

pub fn parse_u32(buf: &[u8]) -> Result<(u32, usize), Error> {
    parse_decimal(buf, u32::MAX)
}

/// Parse exactly `N` decimal bytes separated by `sep` ("192,168,1,2" or "10.0.0.1").
/// Returns the numbers and the bytes consumed (up to, not including, what follows).
pub fn parse_u8_list<const N: usize>(buf: &[u8], sep: u8) -> Result<([u8; N], usize), Error> {
    let mut out = [0u8; N];
    let mut pos = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if i > 0 {
            if buf.get(pos) != Some(&sep) {
                return Err(Error::Syntax);
            }
            pos += 1;
        }
        let (v, n) = parse_u8(buf.get(pos..).unwrap_or(&[]))?;
        *slot = v;
        pos += n;
    }
    Ok((out, pos))
}

#[cfg(test)]
mod tests {
    #[test]
    fn range_within_locates_sub_slices_only() {
        let whole = b"PORT 192,0,2,2,4,1\r\n";
        let part = &whole[5..18];
        assert_eq!(super::range_within(whole, part), Some(5..18));
        assert_eq!(super::range_within(whole, &whole[..0]), Some(0..0));
        assert_eq!(super::range_within(part, whole), None);
        let other = *whole;
        assert_eq!(super::range_within(whole, &other[1..]), None);
    }

    use super::*;

    #[test]
    fn lines() {
        assert_eq!(split_line(b"abc\r\ndef"), Some((&b"abc"[..], &b"def"[..])));
        assert_eq!(
            split_line(b"abc\ndef\n"),
            Some((&b"abc"[..], &b"def\n"[..]))
        );
        assert_eq!(split_line(b"\n"), Some((&b""[..], &b""[..])));
        assert_eq!(split_line(b"abc\r"), None);
        assert_eq!(find_crlf(b"a\nb\r\n"), Some(3));
        assert_eq!(find_crlf(b"\r"), None);
        assert_eq!(trim_cr(b"\r"), b"");
        assert_eq!(trim_cr(b""), b"");
    }

    #[test]
    fn prefixes_and_spaces() {
        assert!(starts_with_ignore_case(b"port 1", b"PORT"));
        assert!(starts_with_ignore_case(b"PoRt", b"PORT"));
        assert!(!starts_with_ignore_case(b"POR", b"PORT"));
        assert!(!starts_with_ignore_case(b"PART", b"PORT"));
        assert_eq!(skip_spaces(b" \t x"), b"x");
        assert_eq!(skip_spaces(b"   "), b"");
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_u8(b"255,"), Ok((255, 3)));
        assert_eq!(parse_u8(b"256"), Err(Error::Overflow));
        assert_eq!(parse_u8(b"007x"), Ok((7, 3)));
        assert_eq!(parse_u8(b"x"), Err(Error::Syntax));
        assert_eq!(parse_u8(b""), Err(Error::Syntax));
        assert_eq!(parse_u16(b"65535|"), Ok((65535, 5)));
        assert_eq!(parse_u16(b"65536"), Err(Error::Overflow));
        assert_eq!(parse_u32(b"4294967295"), Ok((u32::MAX, 10)));
        assert_eq!(parse_u32(b"4294967296"), Err(Error::Overflow));
        assert_eq!(parse_u32(b"99999999999999999999999"), Err(Error::Overflow));
        // A long run of zeros is fine: the value never overflows.
        let zeros = [b'0'; 1000];
        assert_eq!(parse_u8(&zeros), Ok((0, 1000)));
    }

    #[test]
    fn lists() {
        assert_eq!(
            parse_u8_list::<6>(b"10,0,0,1,4,1)", b','),
            Ok(([10, 0, 0, 1, 4, 1], 12))
        );
        assert_eq!(parse_u8_list::<4>(b"1.2.3.4|", b'.'), Ok(([1, 2, 3, 4], 7)));
        assert_eq!(parse_u8_list::<6>(b"1,2,3,4,5", b','), Err(Error::Syntax));
        assert_eq!(parse_u8_list::<6>(b"1,2,3,4,5,", b','), Err(Error::Syntax));
        assert_eq!(
            parse_u8_list::<6>(b"1,2,3,4,256,1", b','),
            Err(Error::Overflow)
        );
        assert_eq!(parse_u8_list::<4>(b"1,2.3.4", b'.'), Err(Error::Syntax));
    }
}
