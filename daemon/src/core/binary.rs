//! Little-endian fields for the compact stored forms of derived state (a
//! planner's memo of a contact's history): a few fixed-width numbers and
//! short strings, read back with a bounds check on every field, so a
//! damaged blob reads as `None` and is rebuilt instead of trusted.

pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A string of at most 65,535 bytes, length first; longer ones are cut at
/// a character boundary.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let len = u16::try_from(end).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Some(head)
}

fn array<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    take(bytes, N)?.try_into().ok()
}

pub fn get_u8(bytes: &mut &[u8]) -> Option<u8> {
    Some(array::<1>(bytes)?[0])
}

pub fn get_u32(bytes: &mut &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(array(bytes)?))
}

pub fn get_i64(bytes: &mut &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(array(bytes)?))
}

pub fn get_str(bytes: &mut &[u8]) -> Option<String> {
    let len = u16::from_le_bytes(array(bytes)?);
    let raw = take(bytes, usize::from(len))?;
    String::from_utf8(raw.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_back_and_a_short_blob_reads_as_none() {
        let mut out = Vec::new();
        put_u8(&mut out, 7);
        put_u32(&mut out, 70_000);
        put_i64(&mut out, -5);
        put_str(&mut out, "page_visit");
        let mut r = out.as_slice();
        assert_eq!(get_u8(&mut r), Some(7));
        assert_eq!(get_u32(&mut r), Some(70_000));
        assert_eq!(get_i64(&mut r), Some(-5));
        assert_eq!(get_str(&mut r).as_deref(), Some("page_visit"));
        assert!(r.is_empty());
        let mut short = &out[..out.len() - 1];
        let _ = (get_u8(&mut short), get_u32(&mut short), get_i64(&mut short));
        assert_eq!(get_str(&mut short), None);
    }
}
