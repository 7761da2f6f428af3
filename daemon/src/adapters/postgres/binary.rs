//! Rows of a binary `COPY (query) TO STDOUT`, read field by field from the
//! stream's chunks. The scans read millions of events this way: no row
//! object, no vector of column ranges and no allocation per row, where a
//! query's rows cost each of these (a fifth of a rebuild's time on the
//! client went to them and to the memory they churned).
//!
//! The format: a signature, flags and a header extension; then each tuple
//! as a field count (16 bits) and each field as a length (32 bits, −1 for
//! NULL) and its bytes, in the column type's binary form; a count of −1
//! ends the data. All integers are big-endian.

use crate::ports::store::StoreError;
use std::future::poll_fn;
use std::pin::pin;
use tokio_postgres::GenericClient;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// One tuple's fields, `None` for NULL.
pub(super) type Fields<'a, const N: usize> = [Option<&'a [u8]>; N];

/// Runs `sql` (a `COPY (SELECT …) TO STDOUT (FORMAT binary)` whose
/// select has `N` columns) and hands each tuple to `f`, in order.
pub(super) async fn copy_rows<const N: usize>(
    c: &impl GenericClient,
    sql: &str,
    mut f: impl FnMut(&Fields<'_, N>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let stream = c.client().copy_out(sql).await?;
    let mut stream = pin!(stream);
    let mut state = Parser::default();
    // The bytes of a tuple split across chunks, kept until it is whole.
    let mut carry: Vec<u8> = Vec::new();
    while let Some(chunk) = poll_fn(|cx| futures_core::Stream::poll_next(stream.as_mut(), cx)).await
    {
        let chunk = chunk?;
        if carry.is_empty() {
            let used = state.parse(&chunk, &mut f)?;
            carry.extend_from_slice(&chunk[used..]);
        } else {
            carry.extend_from_slice(&chunk);
            let used = state.parse(&carry, &mut f)?;
            carry.drain(..used);
        }
    }
    if !state.ended || !carry.is_empty() {
        return Err(StoreError::Corrupt(
            "a binary COPY ended in the middle of its data".into(),
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Parser {
    header: bool,
    ended: bool,
}

impl Parser {
    /// Hands over every whole tuple of `data`; returns how many bytes it
    /// used (the rest is the start of a tuple to come).
    fn parse<const N: usize>(
        &mut self,
        data: &[u8],
        f: &mut impl FnMut(&Fields<'_, N>) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        let mut pos = 0;
        if !self.header {
            // Signature, flags, extension length, extension.
            let Some(ext) = data.get(15..19) else {
                return Ok(0);
            };
            if &data[..11] != SIGNATURE {
                return Err(corrupt("a binary COPY without its signature"));
            }
            let ext = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]) as usize;
            if data.len() < 19 + ext {
                return Ok(0);
            }
            pos = 19 + ext;
            self.header = true;
        }
        let mut fields: Fields<'_, N> = [None; N];
        while let Some(count) = data.get(pos..pos + 2) {
            if self.ended {
                return Err(corrupt("data after the end of a binary COPY"));
            }
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.ended = true;
                pos += 2;
                continue;
            }
            if count as usize != N {
                return Err(corrupt(
                    "a binary COPY tuple with an unexpected field count",
                ));
            }
            let mut at = pos + 2;
            let mut whole = true;
            for field in fields.iter_mut() {
                let Some(len) = data.get(at..at + 4) else {
                    whole = false;
                    break;
                };
                let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                at += 4;
                if len == -1 {
                    *field = None;
                    continue;
                }
                if len < 0 {
                    return Err(corrupt("a binary COPY field of negative length"));
                }
                let Some(bytes) = data.get(at..at + len as usize) else {
                    whole = false;
                    break;
                };
                *field = Some(bytes);
                at += len as usize;
            }
            if !whole {
                break;
            }
            f(&fields)?;
            pos = at;
        }
        Ok(pos)
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.into())
}

/// A `bigint` field.
pub(super) fn int8(field: Option<&[u8]>) -> Result<i64, StoreError> {
    match field {
        Some(&[a, b, c, d, e, f, g, h]) => Ok(i64::from_be_bytes([a, b, c, d, e, f, g, h])),
        Some(_) => Err(corrupt("a bigint field of the wrong length")),
        None => Err(corrupt("a NULL where a bigint is required")),
    }
}

/// A `text` field, or `None` for NULL.
pub(super) fn text_opt(field: Option<&[u8]>) -> Result<Option<&str>, StoreError> {
    field
        .map(|b| std::str::from_utf8(b).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// A field that is never NULL, as its bytes (a text compared before it is
/// read: checking it is UTF-8 is left to the reader that needs a `str`).
pub(super) fn bytes(field: Option<&[u8]>) -> Result<&[u8], StoreError> {
    field.ok_or_else(|| corrupt("a NULL where a value is required"))
}

/// A `text` field that is never NULL.
pub(super) fn text(field: Option<&[u8]>) -> Result<&str, StoreError> {
    text_opt(field)?.ok_or_else(|| corrupt("a NULL where a text is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                Some(b) => {
                    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    out.extend_from_slice(b);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out
    }

    fn stream() -> Vec<u8> {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&0u32.to_be_bytes());
        data.extend_from_slice(&4u32.to_be_bytes());
        data.extend_from_slice(b"ext!");
        data.extend(tuple(&[Some(&7i64.to_be_bytes()), Some(b"visit"), None]));
        data.extend(tuple(&[
            Some(&(-2i64).to_be_bytes()),
            Some(b""),
            Some(b"x"),
        ]));
        data.extend_from_slice(&(-1i16).to_be_bytes());
        data
    }

    type Seen = Vec<(i64, String, Option<String>)>;

    fn feed(chunks: &[&[u8]]) -> Result<(Seen, bool), StoreError> {
        let mut parser = Parser::default();
        let mut seen = Vec::new();
        let mut carry = Vec::new();
        for chunk in chunks {
            carry.extend_from_slice(chunk);
            let used = parser.parse::<3>(&carry, &mut |f| {
                seen.push((
                    int8(f[0])?,
                    text(f[1])?.to_string(),
                    text_opt(f[2])?.map(str::to_string),
                ));
                Ok(())
            })?;
            carry.drain(..used);
        }
        Ok((seen, parser.ended && carry.is_empty()))
    }

    #[test]
    fn every_split_of_the_stream_reads_the_same_tuples() {
        let data = stream();
        let whole = feed(&[&data]).expect("whole");
        assert_eq!(
            whole,
            (
                vec![
                    (7, "visit".into(), None),
                    (-2, String::new(), Some("x".into()))
                ],
                true
            )
        );
        for cut in 0..=data.len() {
            let (a, b) = data.split_at(cut);
            assert_eq!(feed(&[a, b]).expect("split"), whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_stream_cut_short_is_not_taken_as_whole() {
        let data = stream();
        let (_, ended) = feed(&[&data[..data.len() - 2]]).expect("short");
        assert!(!ended);
    }

    #[test]
    fn bad_data_is_an_error_not_a_panic() {
        let mut data = stream();
        data[0] = b'X';
        assert!(feed(&[&data]).is_err());
        let mut data = stream();
        // The first tuple's field count.
        data[23] = 9;
        assert!(feed(&[&data]).is_err());
        let mut data = stream();
        data.extend_from_slice(&tuple(&[None, None, None]));
        assert!(feed(&[&data]).is_err());
        let mut wrong = SIGNATURE.to_vec();
        wrong.extend_from_slice(&[0; 8]);
        wrong.extend(tuple(&[Some(b"short"), Some(b"a"), None]));
        assert!(feed(&[&wrong]).is_err());
    }
}
