//! Telemetry data model: series identity, and the struct-of-arrays batch every source produces.
//!
//! A series is identified by `(service, metric, sorted labels)`. Its id is a stable 64-bit hash of that triple
//! (XXH3-64 over a length-prefixed encoding, see [`series_id`]); the value is part of the output schema, so the
//! encoding must never change.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Stable 64-bit identity of one series.
pub type SeriesId = u64;

/// Series ids are already well-mixed hashes; hashing them again is wasted work.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; this fallback keeps the trait total.
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A hash map by series id (or another id that is already a hash).
pub type IdMap<V> = HashMap<SeriesId, V, BuildHasherDefault<IdHasher>>;

/// A map by series id that forgets what has not been used for a while, for what the sources keep per series (their
/// interned keys, OTLP's cumulative state), which would otherwise grow with every series ever seen (pods come and go).
///
/// Two generations: the entries used in this one, and those of the one before. An entry found in the older generation
/// moves to the current one; a generation ends after [`Recent::GENERATION_PER_ENTRY`] uses per entry held (at least
/// [`Recent::MIN_GENERATION`]), and the older one is dropped with it. An entry used once a generation lives on, moved
/// once a generation: with every series reporting at one rate, a series is forgotten after 16 to 64 of its
/// reporting intervals without a point, and a lookup costs one more hash insert in 16 at most.
pub struct Recent<V> {
    current: IdMap<V>,
    older: IdMap<V>,
    uses: u64,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Self { current: IdMap::default(), older: IdMap::default(), uses: 0 }
    }
}

impl<V> Recent<V> {
    pub const MIN_GENERATION: u64 = 1 << 20;
    pub const GENERATION_PER_ENTRY: u64 = 16;

    /// Counts one use, ending the generation when it is due.
    #[inline]
    fn tick(&mut self) {
        self.uses += 1;
        let held = (self.current.len() + self.older.len()) as u64;
        if self.uses >= Self::MIN_GENERATION.max(Self::GENERATION_PER_ENTRY * held) {
            self.older = std::mem::take(&mut self.current);
            self.uses = 0;
        }
    }

    /// The entry of `id`, made by `make` if it has none (or has been forgotten).
    #[inline]
    pub fn get_or_insert_with(&mut self, id: u64, make: impl FnOnce() -> V) -> &mut V {
        self.tick();
        match self.current.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.older.remove(&id).unwrap_or_else(make)),
        }
    }

    /// Sets the entry of `id`, returning the one it had (`None` if none, or forgotten).
    #[inline]
    pub fn insert(&mut self, id: u64, v: V) -> Option<V> {
        self.tick();
        let old = self.current.insert(id, v);
        old.or_else(|| self.older.remove(&id))
    }

    /// Entries held, of both generations.
    pub fn len(&self) -> usize {
        self.current.len() + self.older.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Event time in milliseconds since the Unix epoch.
pub type TimeMs = i64;

/// The largest magnitude a point's value may have. The detector's models keep their state in `f32`: they give the same
/// events at any scale up to here (measured from 1e-10 to 1e31; BENCHMARKS.md, "Values the models hold"), and no metric
/// comes near it (a 64-bit counter ends at 1.8e19). A value past it is a fault upstream, and one past `f32`'s range
/// (3.4e38) would turn into an infinity that spoils its series' model for good.
pub const MAX_VALUE: f64 = 1e30;

/// Why `v` cannot be a point's value (non-finite, or past ±[`MAX_VALUE`]); `None` when it can.
pub fn value_problem(v: f64) -> Option<String> {
    if !v.is_finite() {
        Some(format!("expected a finite number, got {v}"))
    } else if v.abs() > MAX_VALUE {
        Some(format!("{v:e} lies past ±1e30, the range the models hold (a metric this large is a fault upstream)"))
    } else {
        None
    }
}

/// The identity of one series. Shared by `Arc` so that batches carry it without allocating per point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesKey {
    pub id: SeriesId,
    /// [`service_id`] of `service`: the pipeline routes by it, so every series of a service lands on one shard.
    pub service_id: u64,
    pub service: Arc<str>,
    pub metric: Arc<str>,
    /// Sorted by label name; names are unique.
    pub labels: Box<[(Arc<str>, Arc<str>)]>,
}

impl SeriesKey {
    /// Builds a key, sorting the labels (the last value wins for a repeated name) and computing the id.
    pub fn new<K, V>(service: &str, metric: &str, labels: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut labels: Vec<(Arc<str>, Arc<str>)> =
            labels.into_iter().map(|(k, v)| (Arc::from(k.as_ref()), Arc::from(v.as_ref()))).collect();
        sort_labels(&mut labels);
        let id = series_id(service, metric, labels.iter().map(|(k, v)| (&**k, &**v)));
        Self {
            id,
            service_id: service_id(service),
            service: Arc::from(service),
            metric: Arc::from(metric),
            labels: labels.into_boxed_slice(),
        }
    }

    /// `metric{k=v,…}`: the series within its service, for attributions.
    pub fn metric_name(&self) -> String {
        let full = self.display_name();
        full[self.service.len() + 1..].to_owned()
    }

    /// `service/metric{k=v,…}`, for logs and explanations.
    pub fn display_name(&self) -> String {
        let mut s = format!("{}/{}", self.service, self.metric);
        if !self.labels.is_empty() {
            s.push('{');
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(k);
                s.push('=');
                s.push_str(v);
            }
            s.push('}');
        }
        s
    }
}

/// The stable series id: XXH3-64 (seed 0) over `len(service) service len(metric) metric (len(k) k len(v) v)*`,
/// each length a little-endian `u32`, labels in sorted order.
pub fn series_id<'a>(
    service: &str,
    metric: &str,
    sorted_labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> SeriesId {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut part = |s: &str| {
        h.update(&(s.len() as u32).to_le_bytes());
        h.update(s.as_bytes());
    };
    part(service);
    part(metric);
    for (k, v) in sorted_labels {
        part(k);
        part(v);
    }
    h.digest()
}

/// Sorts `(name, value)` labels by name, keeping the last value of a repeated name (as a JSON object read into a map
/// keeps it): the order [`series_id`] expects.
pub fn sort_labels<K: Ord, V>(labels: &mut Vec<(K, V)>) {
    if labels.len() < 2 {
        return;
    }
    // A stable sort keeps input order among equal names.
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    if labels.windows(2).any(|w| w[0].0 == w[1].0) {
        // Reverse, dedup keeps the first of each run, reverse back.
        labels.reverse();
        labels.dedup_by(|a, b| a.0 == b.0);
        labels.reverse();
    }
}

/// Stable 64-bit identity of a service: XXH3-64 (seed 0) of its name.
pub fn service_id(service: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(service.as_bytes())
}

/// [`series_id`], computed in one shot over `buf` (cleared and refilled with the same length-prefixed encoding).
/// The same value, faster on the decode path: one-shot XXH3 on a short input avoids the streaming state.
pub fn series_id_in<'a>(
    buf: &mut Vec<u8>,
    service: &str,
    metric: &str,
    sorted_labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> SeriesId {
    buf.clear();
    let mut part = |s: &str| {
        buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    };
    part(service);
    part(metric);
    for (k, v) in sorted_labels {
        part(k);
        part(v);
    }
    xxhash_rust::xxh3::xxh3_64(buf)
}

/// A batch of points in struct-of-arrays form. Every source (simulator, files, Kafka) produces this type.
///
/// `seq` is assigned by the pipeline; sources leave it alone. Points of one series appear in event-time order.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub seq: u64,
    /// Warm-up: points read again from before where this instance's input resumes (a Kafka source's
    /// `warm-up`), scored so the models learn them, with their events dropped: they were published before.
    pub warm: bool,
    pub ids: Vec<SeriesId>,
    pub keys: Vec<Arc<SeriesKey>>,
    pub times: Vec<TimeMs>,
    pub values: Vec<f64>,
}

impl Batch {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            seq: 0,
            warm: false,
            ids: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
        }
    }

    #[inline]
    pub fn push(&mut self, key: &Arc<SeriesKey>, time: TimeMs, value: f64) {
        self.ids.push(key.id);
        self.keys.push(Arc::clone(key));
        self.times.push(time);
        self.values.push(value);
    }

    /// Appends points `range` of `other` (its `seq` and `warm` are not copied).
    pub fn extend_from(&mut self, other: &Batch, range: std::ops::Range<usize>) {
        self.ids.extend_from_slice(&other.ids[range.clone()]);
        self.keys.extend_from_slice(&other.keys[range.clone()]);
        self.times.extend_from_slice(&other.times[range.clone()]);
        self.values.extend_from_slice(&other.values[range]);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Keeps the first `n` points.
    pub fn truncate(&mut self, n: usize) {
        self.ids.truncate(n);
        self.keys.truncate(n);
        self.times.truncate(n);
        self.values.truncate(n);
    }

    pub fn clear(&mut self) {
        self.warm = false;
        self.ids.clear();
        self.keys.clear();
        self.times.clear();
        self.values.clear();
    }

    /// Keeps the points `keep(i)` is true for, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let mut w = 0;
        for i in 0..self.len() {
            if keep(i) {
                self.ids.swap(w, i);
                self.keys.swap(w, i);
                self.times.swap(w, i);
                self.values.swap(w, i);
                w += 1;
            }
        }
        self.truncate(w);
    }

    /// Largest event time in the batch, if any.
    pub fn max_time(&self) -> Option<TimeMs> {
        self.times.iter().copied().max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries in use live on, with their values, through any number of generations; entries not used for two
    /// generations are gone; an entry's value comes back from the older generation.
    #[test]
    fn recent_forgets_what_is_not_used() {
        let mut r: Recent<u64> = Recent::default();
        for id in 0..1000u64 {
            r.get_or_insert_with(id, || id * 3);
        }
        for id in 1_000_000..1_002_000u64 {
            r.get_or_insert_with(id, || 0);
        }
        assert_eq!(r.len(), 3000);
        // Three generations' uses of the first thousand only.
        for n in 0..3 * Recent::<u64>::MIN_GENERATION {
            let id = n % 1000;
            assert_eq!(*r.get_or_insert_with(id, || unreachable!("{id} was forgotten")), id * 3);
        }
        assert_eq!(r.len(), 1000, "the ids not used since are forgotten");
        assert!(r.older.is_empty() || r.current.len() + r.older.len() == 1000);
        // `insert` returns the value an entry had, from whichever generation holds it.
        for n in 0..Recent::<u64>::MIN_GENERATION {
            if n % 1000 != 7 {
                r.get_or_insert_with(n % 1000, || 0);
            }
        }
        assert_eq!(r.insert(7, 1), Some(21));
        assert_eq!(r.insert(1_000_001, 1), None, "forgotten");
    }

    #[test]
    fn series_id_ignores_label_order_and_is_stable() {
        let a = SeriesKey::new("cart", "latency_p99_ms", [("zone", "a"), ("pod", "p1")]);
        let b = SeriesKey::new("cart", "latency_p99_ms", [("pod", "p1"), ("zone", "a")]);
        assert_eq!(a.id, b.id);
        assert_eq!(a.display_name(), "cart/latency_p99_ms{pod=p1,zone=a}");
        // Pinned: the id is part of the output schema and must never change.
        assert_eq!(SeriesKey::new("cart", "cpu", [] as [(&str, &str); 0]).id, series_id("cart", "cpu", []));
        assert_ne!(
            SeriesKey::new("ab", "c", [] as [(&str, &str); 0]).id,
            SeriesKey::new("a", "bc", [] as [(&str, &str); 0]).id
        );
    }

    #[test]
    fn one_shot_series_id_is_the_series_id() {
        let mut buf = Vec::new();
        for (s, m, l) in
            [("cart", "cpu", vec![]), ("a", "bc", vec![("pod", "p1"), ("zone", "a")]), ("", "", vec![("", "")])]
        {
            assert_eq!(series_id_in(&mut buf, s, m, l.iter().copied()), series_id(s, m, l.iter().copied()));
        }
        let long = "x".repeat(500);
        assert_eq!(
            series_id_in(&mut buf, &long, "m", [("k", long.as_str())]),
            series_id(&long, "m", [("k", long.as_str())])
        );
    }

    #[test]
    fn repeated_label_keeps_last_value() {
        let k = SeriesKey::new("s", "m", [("a", "1"), ("a", "2")]);
        assert_eq!(k.labels.len(), 1);
        assert_eq!(&*k.labels[0].1, "2");
    }
}
