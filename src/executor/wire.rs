//! What crosses processes as bytes: [`Wire`], a plain little-endian
//! encoding for the programs' outputs (logits and gradients are large; JSON
//! would multiply them) and for what training combines across ranks. A leaf:
//! it knows no run, program or transport.

/// A value as bytes and back (little-endian, lengths as u64).
pub trait Wire: Sized {
    fn put(&self, out: &mut Vec<u8>);
    /// Read one value off the front of `inp`; `None` when it is short.
    fn take(inp: &mut &[u8]) -> Option<Self>;
}

pub(crate) fn take_n<'a>(inp: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if inp.len() < n {
        return None;
    }
    let (head, rest) = inp.split_at(n);
    *inp = rest;
    Some(head)
}

macro_rules! wire_num {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn take(inp: &mut &[u8]) -> Option<Self> {
                let b = take_n(inp, std::mem::size_of::<$t>())?;
                Some(<$t>::from_le_bytes(b.try_into().ok()?))
            }
        }
    )*};
}
wire_num!(u32, u64, f32, f64);

impl Wire for usize {
    fn put(&self, out: &mut Vec<u8>) {
        (*self as u64).put(out)
    }
    fn take(inp: &mut &[u8]) -> Option<Self> {
        usize::try_from(u64::take(inp)?).ok()
    }
}

/// UTF-8 bytes after their length (tensor names).
impl Wire for String {
    fn put(&self, out: &mut Vec<u8>) {
        self.len().put(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn take(inp: &mut &[u8]) -> Option<Self> {
        let n = usize::take(inp)?;
        String::from_utf8(take_n(inp, n)?.to_vec()).ok()
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        self.len().put(out);
        for x in self {
            x.put(out);
        }
    }
    fn take(inp: &mut &[u8]) -> Option<Self> {
        let n = usize::take(inp)?;
        // Each element is at least one byte: a corrupt length cannot
        // allocate more than the input could hold.
        let mut v = Vec::with_capacity(n.min(inp.len()));
        for _ in 0..n {
            v.push(T::take(inp)?);
        }
        Some(v)
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
    }
    fn take(inp: &mut &[u8]) -> Option<Self> {
        Some((A::take(inp)?, B::take(inp)?))
    }
}

impl<A: Wire, B: Wire, C: Wire> Wire for (A, B, C) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
        self.2.put(out);
    }
    fn take(inp: &mut &[u8]) -> Option<Self> {
        Some((A::take(inp)?, B::take(inp)?, C::take(inp)?))
    }
}

/// `v` encoded.
pub fn to_bytes<T: Wire>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.put(&mut out);
    out
}

/// `b` decoded, all of it.
pub fn from_bytes<T: Wire>(mut b: &[u8]) -> Option<T> {
    let v = T::take(&mut b)?;
    b.is_empty().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let v: Vec<(usize, Vec<f32>)> = vec![(3, vec![1.5, -0.0, f32::MAX]), (0, vec![])];
        assert_eq!(from_bytes::<Vec<(usize, Vec<f32>)>>(&to_bytes(&v)), Some(v));
        let d: (u64, Vec<Vec<u32>>, Vec<Vec<f32>>) =
            (7, vec![vec![1, 2], vec![]], vec![vec![0.25]]);
        assert_eq!(from_bytes(&to_bytes(&d)), Some(d));
    }

    #[test]
    fn short_or_long_input_is_refused() {
        let b = to_bytes(&vec![1u32, 2, 3]);
        assert_eq!(from_bytes::<Vec<u32>>(&b[..b.len() - 1]), None);
        let mut long = b.clone();
        long.push(0);
        assert_eq!(from_bytes::<Vec<u32>>(&long), None);
        // A huge length with no data behind it fails instead of allocating.
        assert_eq!(from_bytes::<Vec<u32>>(&to_bytes(&(u64::MAX / 2))), None);
    }
}
