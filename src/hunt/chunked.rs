//! A list that grows by chunks of a fixed capacity instead of doubling one vector: what a
//! hunt's workers keep item by item (credential states, findings), a few hundred bytes each.
//!
//! Why: a vector grown by doubling copies every item at each step, and first touches twice
//! its final memory — every fresh page a page fault, in the middle of the workers' run. A
//! chunk, once made, never moves: the memory touched is the items', once.

/// About this many bytes per chunk (a chunk holds at least one item).
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    /// Items per chunk.
    const PER_CHUNK: usize = {
        let size = std::mem::size_of::<T>();
        if size == 0 || size >= CHUNK_BYTES {
            1
        } else {
            CHUNK_BYTES / size
        }
    };

    /// Adds an item: its index.
    pub(crate) fn push(&mut self, item: T) -> usize {
        match self.chunks.last_mut() {
            Some(last) if last.len() < Self::PER_CHUNK => last.push(item),
            _ => {
                let mut chunk = Vec::with_capacity(Self::PER_CHUNK);
                chunk.push(item);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
        self.len - 1
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.chunks
            .get(i / Self::PER_CHUNK)?
            .get(i % Self::PER_CHUNK)
    }

    /// Exchanges the items at `a` and `b` (both below [`Self::len`]).
    pub(crate) fn swap(&mut self, a: usize, b: usize) {
        let (ca, ia) = (a / Self::PER_CHUNK, a % Self::PER_CHUNK);
        let (cb, ib) = (b / Self::PER_CHUNK, b % Self::PER_CHUNK);
        if ca == cb {
            self.chunks[ca].swap(ia, ib);
            return;
        }
        let (low, high) = (ca.min(cb), ca.max(cb));
        let (head, tail) = self.chunks.split_at_mut(high);
        let (x, y) = (&mut head[low], &mut tail[0]);
        if ca < cb {
            std::mem::swap(&mut x[ia], &mut y[ib]);
        } else {
            std::mem::swap(&mut x[ib], &mut y[ia]);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// Keeps the items `keep` says yes to, in order (each chunk filled again, so that an
    /// item's index stays a chunk and a place in it).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut kept = Chunked::default();
        for item in std::mem::take(&mut self.chunks).into_iter().flatten() {
            if keep(&item) {
                kept.push(item);
            }
        }
        *self = kept;
    }
}

/// An index below [`Chunked::len`], as a vector's.
impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i / Self::PER_CHUNK][i % Self::PER_CHUNK]
    }
}

impl<T> std::ops::IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i / Self::PER_CHUNK][i % Self::PER_CHUNK]
    }
}

impl<T> IntoIterator for Chunked<T> {
    type Item = T;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<T>>>;

    /// The items in order, each chunk freed once emptied.
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indices, swaps and removals agree with a plain vector's across chunk boundaries
    /// (items of 64 KiB: sixteen per chunk).
    #[test]
    fn behaves_as_a_vector_across_chunks() {
        const SIZE: usize = 1 << 16;
        #[derive(Debug, Clone, PartialEq)]
        struct Big(usize, [u8; SIZE - 8]);
        assert_eq!(Chunked::<Big>::PER_CHUNK, 16);
        assert_eq!(Chunked::<[u8; 2 * CHUNK_BYTES]>::PER_CHUNK, 1);
        assert_eq!(Chunked::<()>::PER_CHUNK, 1);
        let big = |i| Big(i, [0; SIZE - 8]);
        let mut list = Chunked::default();
        let mut plain = Vec::new();
        for i in 0..40 {
            assert_eq!(list.push(big(i)), i);
            plain.push(big(i));
        }
        for (a, b) in [(0, 17), (39, 2), (20, 21), (5, 5), (33, 16), (15, 16)] {
            list.swap(a, b);
            plain.swap(a, b);
        }
        assert_eq!(list.len(), 40);
        assert!(list.iter().eq(plain.iter()));
        assert_eq!(list.get(39), plain.get(39));
        assert!(list.get(40).is_none());
        list[19].0 = 98;
        plain[19].0 = 98;
        assert_eq!(list[19], plain[19]);
        list.retain(|x| x.0 % 3 != 0);
        plain.retain(|x| x.0 % 3 != 0);
        assert_eq!(list.len(), plain.len());
        assert!(list.iter().eq(plain.iter()));
        assert_eq!(list.get(20), plain.get(20));
        assert!(list.into_iter().eq(plain));
        assert_eq!(Chunked::<u8>::default().len(), 0);
    }
}
