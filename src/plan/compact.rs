//! Compact containers of the plan model, for plans of 190,000 targets held in memory at once.
//!
//! - [`FieldMap`]: a binding's field → variable map. A `BTreeMap` allocates a whole node (eleven
//!   slots, about 700 bytes here) for its first entry, while a binding maps one to three fields;
//!   a sorted vector holds the same map in the bytes it needs, in the same order.
//! - [`Sparse`]: a part of a target that most targets leave empty (policy), stored only when
//!   set and read as its empty value otherwise, so an empty one costs one pointer.
//!
//! - [`shrunk`]: lists read without the spare capacity serde leaves them.
//!
//! They read, compare, print and (de)serialize exactly like the types they replace.

use super::located::Located;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;

/// A small map ordered by key, with the reading side of `BTreeMap`'s interface.
#[derive(Clone, PartialEq, Eq)]
pub struct FieldMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for FieldMap<K, V> {
    fn default() -> Self {
        FieldMap(Vec::new())
    }
}

impl<K: Ord, V> FieldMap<K, V> {
    pub const fn new() -> Self {
        FieldMap(Vec::new())
    }

    /// Room for `n` entries: a binding's fields are known before they are inserted, and a
    /// first insert into an empty map reserves four (256 bytes of variable names per binding).
    pub fn with_capacity(n: usize) -> Self {
        FieldMap(Vec::with_capacity(n))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// As `BTreeMap::insert`: a present key keeps its (first) spelling and gets the new value.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub fn iter(&self) -> Iter<'_, K, V> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    /// From entries in any order; for a key given twice, the first spelling and the last value
    /// (what inserting them one by one into a `BTreeMap` keeps), in O(n log n).
    fn from_entries(mut entries: Vec<(K, V)>) -> Self {
        // Stable: equal keys stay in the order given.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(K, V)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        out.shrink_to_fit();
        FieldMap(out)
    }
}

pub type Iter<'a, K, V> =
    std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

impl<'a, K: Ord, V> IntoIterator for &'a FieldMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Ord, V> IntoIterator for FieldMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for FieldMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        FieldMap::from_entries(iter.into_iter().collect())
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for FieldMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        FieldMap::from_entries(entries.into())
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for FieldMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<K: Serialize, V: Serialize> Serialize for FieldMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for FieldMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
            type Value = FieldMap<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // The size hint comes from the input: trust it only for a little room.
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(8));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(FieldMap::from_entries(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

/// Drops a value's spare capacity after reading it. serde's `Vec` grows to four slots for its
/// first element and doubles from there; a binding list of one kept three empty slots.
pub trait Shrink {
    fn shrink(&mut self);
}

impl<T> Shrink for Vec<T> {
    fn shrink(&mut self) {
        self.shrink_to_fit()
    }
}

impl<T: Shrink> Shrink for Located<T> {
    fn shrink(&mut self) {
        self.value.shrink()
    }
}

impl<T: Shrink> Shrink for Option<T> {
    fn shrink(&mut self) {
        if let Some(v) = self {
            v.shrink()
        }
    }
}

/// `deserialize_with` for a field read with no spare capacity (see [`Shrink`]).
pub fn shrunk<'de, D: Deserializer<'de>, T: Deserialize<'de> + Shrink>(
    d: D,
) -> Result<T, D::Error> {
    let mut value = T::deserialize(d)?;
    value.shrink();
    Ok(value)
}

/// What a [`Sparse`] reads as when nothing is stored.
pub trait Empty: Default + 'static {
    fn empty() -> &'static Self;
}

/// A value stored only when it differs from its type's [`Empty::empty`] at construction or
/// after a mutable borrow: reads go through `Deref` as if it were always there.
#[derive(Clone, Default)]
pub struct Sparse<T>(Option<Box<T>>);

impl<T: Empty + PartialEq> Sparse<T> {
    pub fn new(value: T) -> Self {
        if value == *T::empty() {
            Sparse(None)
        } else {
            Sparse(Some(Box::new(value)))
        }
    }

    /// Whether it reads as the empty value (what `skip_serializing_if` asks).
    pub fn is_empty(&self) -> bool {
        **self == *T::empty()
    }
}

impl<T: Empty + PartialEq> From<T> for Sparse<T> {
    fn from(value: T) -> Self {
        Sparse::new(value)
    }
}

impl<T: Empty> std::ops::Deref for Sparse<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_deref().unwrap_or_else(|| T::empty())
    }
}

impl<T: Empty> std::ops::DerefMut for Sparse<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }
}

impl<T: Empty + PartialEq> PartialEq for Sparse<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Empty + std::fmt::Debug> std::fmt::Debug for Sparse<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: Empty + Serialize> Serialize for Sparse<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de, T: Empty + PartialEq + Deserialize<'de>> Deserialize<'de> for Sparse<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Sparse::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_field_map_keeps_what_a_btreemap_keeps() {
        let entries = [("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5)];
        let mut tree = BTreeMap::new();
        let mut inserted = FieldMap::new();
        for (k, v) in entries {
            tree.insert(k, v);
            inserted.insert(k, v);
        }
        let collected: FieldMap<_, _> = entries.into_iter().collect();
        let want: Vec<_> = tree.iter().collect();
        assert_eq!(inserted.iter().collect::<Vec<_>>(), want);
        assert_eq!(collected.iter().collect::<Vec<_>>(), want);
        assert_eq!(format!("{collected:?}"), format!("{tree:?}"));
        assert_eq!(collected.get("c"), Some(&4));
        assert!(!collected.contains_key("d"));
    }

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct Opt {
        n: Option<u32>,
    }
    static EMPTY_OPT: Opt = Opt { n: None };
    impl Empty for Opt {
        fn empty() -> &'static Self {
            &EMPTY_OPT
        }
    }

    #[test]
    fn a_sparse_value_stores_only_what_is_set() {
        let mut s = Sparse::new(Opt::default());
        assert!(s.0.is_none() && s.is_empty());
        assert_eq!(s.n, None);
        s.n = Some(3);
        assert_eq!((s.n, s.is_empty()), (Some(3), false));
        assert_eq!(format!("{s:?}"), "Opt { n: Some(3) }");
        assert_eq!(s, Sparse::new(Opt { n: Some(3) }));
    }
}
