//! The mutations: byte flips and replacements with the characters parsers branch on, inserted
//! and deleted runs, splices of two parents, dictionary tokens of the target's language, and
//! repeated runs (deep nesting, long values). Several are stacked per input.

/// A small deterministic generator (SplitMix64): a run is reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes that parsers of JSON, YAML, CSV and Sigma branch on.
const SPECIAL: &[u8] = b"{}[]\":,\\\n\r\t '|*?()-#&!%@0123456789.eE+nulltrufas\x00\xff\xc3\xa9";

/// A mutated copy of an input of `pool`, at most `max` bytes.
pub fn mutate(rng: &mut Rng, pool: &[Vec<u8>], dict: &[&str], max: usize) -> Vec<u8> {
    let mut out = pool[rng.below(pool.len())].clone();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = out.len();
        let at = rng.below(len + 1);
        match rng.below(10) {
            // Flip a bit.
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            // Replace a byte with a special one.
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = SPECIAL[rng.below(SPECIAL.len())];
            }
            // Insert special bytes.
            2 => {
                let n = 1 + rng.below(4);
                let ins: Vec<u8> = (0..n).map(|_| SPECIAL[rng.below(SPECIAL.len())]).collect();
                out.splice(at..at, ins);
            }
            // Delete a run.
            3 if len > 0 => {
                let n = 1 + rng.below(len.min(64));
                let end = (at + n).min(len);
                out.drain(at.min(len)..end);
            }
            // Insert a dictionary token.
            4 | 5 if !dict.is_empty() => {
                let tok = dict[rng.below(dict.len())].as_bytes();
                out.splice(at..at, tok.iter().copied());
            }
            // Splice: this input's head, another's tail.
            6 => {
                let other = &pool[rng.below(pool.len())];
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            // Repeat a run (nesting, long values).
            7 if len > 0 => {
                let n = 1 + rng.below(len.min(16));
                let start = rng.below(len);
                let end = (start + n).min(len);
                let run = out[start..end].to_vec();
                let most = if rng.below(8) == 0 { 2000 } else { 8 };
                let times = 1 + rng.below(most);
                let mut ins = Vec::with_capacity(run.len() * times);
                for _ in 0..times {
                    ins.extend_from_slice(&run);
                }
                out.splice(start..start, ins);
            }
            // Copy a run elsewhere.
            8 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let run = out[start..end].to_vec();
                out.splice(at..at, run);
            }
            // Overwrite with a number at the edges (lengths, times, sizes).
            _ => {
                let edge = [
                    "0",
                    "-1",
                    "18446744073709551616",
                    "1e999",
                    "-0",
                    "9999-12-31T23:59:59Z",
                    "200000000d",
                    "\"\"",
                    "null",
                ];
                let tok = edge[rng.below(edge.len())].as_bytes();
                out.splice(at..at, tok.iter().copied());
            }
        }
        out.truncate(max);
    }
    out
}
