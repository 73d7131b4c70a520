//! A reader of OTLP metrics protobuf that borrows from the record instead of building messages: the decode path of
//! [`OtlpDecoder::decode_proto`](super::OtlpDecoder::decode_proto) without an allocation per data point.
//!
//! prost decodes an `ExportMetricsServiceRequest` into owned messages (a `Vec` of attributes, two `String`s and an
//! `AnyValue` per attribute of every data point), which made it the slowest stage of Kafka ingest. This reader walks
//! the same bytes in two passes: [`check`] validates the whole request against the message definitions of
//! `opentelemetry-proto` (field numbers, wire types, lengths, UTF-8 of every string), and the walk in
//! [`super::OtlpDecoder::decode_wire`] then reads fields straight from the bytes (in any order, as protobuf allows).
//!
//! [`check`] accepts a subset of what prost accepts, and the walk reads from it exactly what prost would: anything it
//! does not take (a malformed record, groups, a singular message field given twice, which protobuf merges, two members
//! of a oneof, nesting deeper than [`MAX_DEPTH`]) goes to prost, which decodes it or names the error. The test
//! `the_wire_reader_decodes_as_prost_does` in `tests/it/otlp_wire.rs` holds the two paths to the same points on random
//! and damaged requests.

/// What [`check`] does not take: the record goes to prost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bail;

/// Nesting this reader takes (prost's limit is 100): a deeper record (attribute values of nested arrays) goes to prost.
const MAX_DEPTH: u32 = 32;

/// One field's payload.
#[derive(Debug, Clone, Copy)]
pub(super) enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    /// A 32-bit field (none in OTLP metrics; an unknown field's).
    Fixed32,
}

/// The fields of one message, in wire order.
#[derive(Clone, Copy)]
pub(super) struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, Bail> {
        // Keys, lengths and small numbers: one byte.
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(b));
        }
        self.varint_long()
    }

    fn varint_long(&mut self) -> Result<u64, Bail> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            if i == 9 && b >= 2 {
                return Err(Bail);
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(Bail)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Bail> {
        if n > self.buf.len() {
            return Err(Bail);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    #[inline]
    fn next_field(&mut self) -> Result<(u32, Field<'a>), Bail> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| Bail)?;
        if tag == 0 {
            return Err(Bail);
        }
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| Bail)?)),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| Bail)?;
                Field::Len(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            // Groups (3, 4) are not in OTLP; 6 and 7 are not wire types.
            _ => return Err(Bail),
        };
        Ok((tag, field))
    }

    /// The fields after a successful [`check`]: the iteration ends at the first field that does not read (none does).
    pub(super) fn ok(self) -> impl Iterator<Item = (u32, Field<'a>)> {
        let mut f = self;
        std::iter::from_fn(move || if f.buf.is_empty() { None } else { f.next_field().ok() })
    }

    /// The payloads of the length-delimited fields numbered `tag` (a repeated message field), in order.
    pub(super) fn messages(self, tag: u32) -> impl Iterator<Item = &'a [u8]> {
        self.ok().filter_map(move |(t, f)| match f {
            Field::Len(b) if t == tag => Some(b),
            _ => None,
        })
    }

    /// The last length-delimited field numbered `tag` (a singular field: the last one counts).
    pub(super) fn last_len(self, tag: u32) -> Option<&'a [u8]> {
        self.messages(tag).last()
    }
}

/// A checked string field (see [`check`]).
pub(super) fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

/// How a field of a message is encoded.
#[derive(Clone, Copy)]
enum Kind {
    Varint,
    Fixed64,
    Str,
    Bytes,
    /// A repeated message field.
    Messages(&'static Schema),
    /// A singular message field: given twice, protobuf merges the two, which this reader leaves to prost.
    Message(&'static Schema),
    /// Repeated fixed64 or double: packed, or one value a field.
    RepeatedFixed64,
    /// Repeated varint: packed, or one value a field.
    RepeatedVarint,
}

/// A message definition: its fields by number, and the oneof (bit n: field n) whose members may appear once in all
/// (this reader leaves more to prost: the last one wins there, merged where it is a message).
struct Schema {
    fields: [Option<Kind>; FIELDS],
    oneof: u32,
}

/// Field numbers below this: OTLP's metrics messages number theirs 1 to 14.
const FIELDS: usize = 16;

impl Schema {
    const fn new(list: &[(u32, Kind)], oneof: u32) -> Self {
        let mut fields = [None; FIELDS];
        let mut i = 0;
        while i < list.len() {
            fields[list[i].0 as usize] = Some(list[i].1);
            i += 1;
        }
        Self { fields, oneof }
    }
}

use Kind::*;

static REQUEST: Schema = Schema::new(&[(1, Messages(&RESOURCE_METRICS))], 0);
static RESOURCE_METRICS: Schema = Schema::new(&[(1, Message(&RESOURCE)), (2, Messages(&SCOPE_METRICS)), (3, Str)], 0);
static RESOURCE: Schema = Schema::new(&[(1, Messages(&KEY_VALUE)), (2, Varint), (3, Messages(&ENTITY_REF))], 0);
static ENTITY_REF: Schema = Schema::new(&[(1, Str), (2, Str), (3, Str), (4, Str)], 0);
static SCOPE_METRICS: Schema = Schema::new(&[(1, Message(&SCOPE)), (2, Messages(&METRIC)), (3, Str)], 0);
static SCOPE: Schema = Schema::new(&[(1, Str), (2, Str), (3, Messages(&KEY_VALUE)), (4, Varint)], 0);
static METRIC: Schema = Schema::new(
    &[
        (1, Str),
        (2, Str),
        (3, Str),
        (5, Message(&GAUGE)),
        (7, Message(&SUM)),
        (9, Message(&HISTOGRAM)),
        (10, Message(&EXP_HISTOGRAM)),
        (11, Message(&SUMMARY)),
        (12, Messages(&KEY_VALUE)),
    ],
    1 << 5 | 1 << 7 | 1 << 9 | 1 << 10 | 1 << 11,
);
static GAUGE: Schema = Schema::new(&[(1, Messages(&NUMBER_POINT))], 0);
static SUM: Schema = Schema::new(&[(1, Messages(&NUMBER_POINT)), (2, Varint), (3, Varint)], 0);
static HISTOGRAM: Schema = Schema::new(&[(1, Messages(&HISTOGRAM_POINT)), (2, Varint)], 0);
static EXP_HISTOGRAM: Schema = Schema::new(&[(1, Messages(&EXP_HISTOGRAM_POINT)), (2, Varint)], 0);
static SUMMARY: Schema = Schema::new(&[(1, Messages(&SUMMARY_POINT))], 0);
static NUMBER_POINT: Schema = Schema::new(
    &[
        (2, Fixed64),
        (3, Fixed64),
        (4, Fixed64),
        (5, Messages(&EXEMPLAR)),
        (6, Fixed64),
        (7, Messages(&KEY_VALUE)),
        (8, Varint),
    ],
    0,
);
static HISTOGRAM_POINT: Schema = Schema::new(
    &[
        (2, Fixed64),
        (3, Fixed64),
        (4, Fixed64),
        (5, Fixed64),
        (6, RepeatedFixed64),
        (7, RepeatedFixed64),
        (8, Messages(&EXEMPLAR)),
        (9, Messages(&KEY_VALUE)),
        (10, Varint),
        (11, Fixed64),
        (12, Fixed64),
    ],
    0,
);
static EXP_HISTOGRAM_POINT: Schema = Schema::new(
    &[
        (1, Messages(&KEY_VALUE)),
        (2, Fixed64),
        (3, Fixed64),
        (4, Fixed64),
        (5, Fixed64),
        (6, Varint),
        (7, Fixed64),
        (8, Message(&BUCKETS)),
        (9, Message(&BUCKETS)),
        (10, Varint),
        (11, Messages(&EXEMPLAR)),
        (12, Fixed64),
        (13, Fixed64),
        (14, Fixed64),
    ],
    0,
);
static BUCKETS: Schema = Schema::new(&[(1, Varint), (2, RepeatedVarint)], 0);
static SUMMARY_POINT: Schema = Schema::new(
    &[
        (2, Fixed64),
        (3, Fixed64),
        (4, Fixed64),
        (5, Fixed64),
        (6, Messages(&QUANTILE)),
        (7, Messages(&KEY_VALUE)),
        (8, Varint),
    ],
    0,
);
static QUANTILE: Schema = Schema::new(&[(1, Fixed64), (2, Fixed64)], 0);
static EXEMPLAR: Schema =
    Schema::new(&[(2, Fixed64), (3, Fixed64), (4, Bytes), (5, Bytes), (6, Fixed64), (7, Messages(&KEY_VALUE))], 0);
static KEY_VALUE: Schema = Schema::new(&[(1, Str), (2, Message(&ANY_VALUE)), (3, Varint)], 0);
static ANY_VALUE: Schema = Schema::new(
    &[
        (1, Str),
        (2, Varint),
        (3, Varint),
        (4, Fixed64),
        (5, Message(&ARRAY_VALUE)),
        (6, Message(&KEY_VALUE_LIST)),
        (7, Bytes),
        (8, Varint),
    ],
    0b1_1111_1110,
);
static ARRAY_VALUE: Schema = Schema::new(&[(1, Messages(&ANY_VALUE))], 0);
static KEY_VALUE_LIST: Schema = Schema::new(&[(1, Messages(&KEY_VALUE))], 0);

/// Whether this reader takes `bytes` as an `ExportMetricsServiceRequest` (see the module's notes).
pub(super) fn check(bytes: &[u8]) -> Result<(), Bail> {
    check_message(bytes, &REQUEST, 0)
}

fn check_message(bytes: &[u8], schema: &Schema, depth: u32) -> Result<(), Bail> {
    if depth > MAX_DEPTH {
        return Err(Bail);
    }
    // Singular message fields seen (bit n: field n), and whether a oneof member was, to refuse a second one.
    let (mut seen, mut oneof_seen) = (0u32, false);
    let mut f = Fields::new(bytes);
    while !f.buf.is_empty() {
        let (tag, field) = f.next_field()?;
        let Some(kind) = schema.fields.get(tag as usize).copied().flatten() else {
            continue; // an unknown field: prost skips it too
        };
        if tag < 32 && schema.oneof & (1 << tag) != 0 {
            if oneof_seen {
                return Err(Bail);
            }
            oneof_seen = true;
        }
        match (kind, field) {
            (Varint | RepeatedVarint, Field::Varint(_)) | (Fixed64 | RepeatedFixed64, Field::Fixed64(_)) => {}
            (Bytes, Field::Len(_)) => {}
            (Str, Field::Len(b)) => {
                if !b.is_ascii() {
                    std::str::from_utf8(b).map_err(|_| Bail)?;
                }
            }
            (Messages(inner), Field::Len(b)) => check_message(b, inner, depth + 1)?,
            (Message(inner), Field::Len(b)) => {
                if seen & (1 << tag) != 0 {
                    return Err(Bail);
                }
                seen |= 1 << tag;
                check_message(b, inner, depth + 1)?;
            }
            (RepeatedFixed64, Field::Len(b)) => {
                if !b.len().is_multiple_of(8) {
                    return Err(Bail);
                }
            }
            (RepeatedVarint, Field::Len(b)) => {
                let mut packed = Fields::new(b);
                while !packed.buf.is_empty() {
                    packed.varint()?;
                }
            }
            // A known field with another wire type: prost's error.
            _ => return Err(Bail),
        }
    }
    Ok(())
}

/// Appends the values of a checked repeated fixed64 field (`RepeatedFixed64`: packed or not) to `out`.
pub(super) fn fixed64s(field: Field<'_>, out: &mut Vec<u64>) {
    match field {
        Field::Fixed64(v) => out.push(v),
        Field::Len(b) => out.extend(b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_read_as_prost_reads_them() {
        let read = |b: &[u8]| Fields::new(b).varint();
        assert_eq!(read(&[0x96, 0x01]), Ok(150));
        assert_eq!(read(&[0x80, 0x00]), Ok(0), "a longer encoding than needed is still the value");
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read(&max), Ok(u64::MAX));
        assert_eq!(read(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]), Err(Bail), "past u64");
        assert_eq!(read(&[0x80; 11]), Err(Bail), "more than ten bytes");
        assert_eq!(read(&[0x80]), Err(Bail), "cut short");
    }

    #[test]
    fn what_the_reader_leaves_to_prost() {
        // Field 1 of the request with wire type 0: a known field with the wrong wire type.
        assert_eq!(check(&[0x08, 0x01]), Err(Bail));
        // Tag 0; a group; a length past the end.
        assert_eq!(check(&[0x00]), Err(Bail));
        assert_eq!(check(&[0x0b, 0x0c]), Err(Bail));
        assert_eq!(check(&[0x0a, 0x05, 0x00]), Err(Bail));
        // An unknown field of each wire type is skipped; an empty request is one.
        assert_eq!(check(&[0x10, 0x01, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x22, 0x01, 0xff, 0x2d, 0, 0, 0, 0]), Ok(()));
        assert_eq!(check(&[]), Ok(()));
        // resource given twice in one ResourceMetrics (protobuf merges them): prost's.
        assert_eq!(check(&[0x0a, 0x04, 0x0a, 0x00, 0x0a, 0x00]), Err(Bail));
        // A metric name that is not UTF-8.
        let metric = [0x0a, 0x01, 0xff];
        let scope = [&[0x12, metric.len() as u8][..], &metric].concat();
        let rm = [&[0x12, scope.len() as u8][..], &scope].concat();
        assert_eq!(check(&[&[0x0a, rm.len() as u8][..], &rm].concat()), Err(Bail));
    }
}
