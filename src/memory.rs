//! Host memory for sizes that come from user input (a LoRA rank, a model width, a data file):
//! what this machine has, and allocations that fail with a message instead of aborting the
//! process ("memory allocation of N bytes failed" is never what a user should see).
//!
//! Sizes are computed with checked arithmetic; a request larger than the memory available now
//! is refused up front (Linux: `MemAvailable` of /proc/meminfo, capped by a cgroup v2 limit;
//! elsewhere only the allocator decides), and the allocation itself is `try_reserve`d. The
//! run's full memory plan (GPU included) is built on top of this; here is the floor that keeps a
//! hostile size from aborting.

use std::fmt;

/// Requests below this are not compared with the available memory (reading /proc costs more
/// than they do); they are still fallible.
const CHECK_ABOVE: u64 = 64 << 20;

/// A request for memory that cannot be met: what asked, how much, and what the machine has.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct MemoryError {
    /// What the memory is for, in the user's words (names the flag or file it comes from).
    pub what: String,
    /// Bytes asked for; None when the size does not even fit in 64 bits.
    pub bytes: Option<u64>,
    /// Bytes available when it was asked, where the platform says.
    pub available: Option<u64>,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bytes {
            Some(b) => write!(f, "{} needs {} of memory", self.what, human(b))?,
            None => write!(f, "{} needs more memory than a 64-bit size can express", self.what)?,
        }
        match self.available {
            Some(a) => write!(f, ", but this machine has {} available", human(a)),
            None => write!(f, ", which this machine could not allocate"),
        }
    }
}

/// Bytes as a person reads them: "812 B", "3.2 MiB", "17.5 TiB".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Memory this process could still get, in bytes: what the platform tells (Linux), capped by
/// `WEBTUNE_MAX_MEMORY` (bytes, or with a K/M/G/T suffix, binary units) where that is set; None
/// when neither says (then only the allocator decides).
pub fn available() -> Option<u64> {
    #[cfg(not(target_arch = "wasm32"))]
    let cap = std::env::var("WEBTUNE_MAX_MEMORY").ok().and_then(|v| parse_size(&v));
    #[cfg(target_arch = "wasm32")]
    let cap = None;
    match (platform_available(), cap) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// "1073741824", "512M", "2G", "1.5GiB" -> bytes (binary units); None if it is not a size.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (num, shift) = match t.chars().last()?.to_ascii_uppercase() {
        'K' => (&t[..t.len() - 1], 10),
        'M' => (&t[..t.len() - 1], 20),
        'G' => (&t[..t.len() - 1], 30),
        'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * (1u64 << shift) as f64) as u64)
}

fn platform_available() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?;
        let mut avail = kib.saturating_mul(1024);
        // A container's limit (cgroup v2) may be lower than the machine's free memory.
        let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
        if let (Some(max), Some(cur)) = (read("memory.max"), read("memory.current")) {
            if let (Ok(max), Ok(cur)) = (max.trim().parse::<u64>(), cur.trim().parse::<u64>()) {
                avail = avail.min(max.saturating_sub(cur));
            }
        }
        Some(avail)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// `n` elements of `T` in bytes, None on overflow.
pub fn bytes_of<T>(n: usize) -> Option<u64> {
    (n as u64).checked_mul(std::mem::size_of::<T>() as u64)
}

/// The product of `dims` (a tensor's element count), None on overflow.
pub fn elements(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Refuses `bytes` (None = overflowed) when it is more than the machine has available.
pub fn check(what: &dyn Fn() -> String, bytes: Option<u64>) -> Result<(), MemoryError> {
    let Some(b) = bytes else {
        return Err(MemoryError { what: what(), bytes: None, available: available() });
    };
    if b >= CHECK_ABOVE {
        if let Some(a) = available() {
            if b > a {
                return Err(MemoryError { what: what(), bytes: Some(b), available: Some(a) });
            }
        }
    }
    Ok(())
}

/// Makes room for `extra` more elements in `v`, or says why not (checked against the available
/// memory first, then `try_reserve`; never aborts).
pub fn reserve<T>(v: &mut Vec<T>, extra: usize, what: &dyn Fn() -> String) -> Result<(), MemoryError> {
    if v.capacity() - v.len() >= extra {
        return Ok(());
    }
    let bytes = v.len().checked_add(extra).and_then(bytes_of::<T>);
    check(what, bytes)?;
    v.try_reserve(extra).map_err(|_| MemoryError { what: what(), bytes, available: available() })
}

/// `n` copies of `value`, or why there is not memory for them.
pub fn vec<T: Clone>(n: usize, value: T, what: &dyn Fn() -> String) -> Result<Vec<T>, MemoryError> {
    let mut v = Vec::new();
    reserve(&mut v, n, what)?;
    v.resize(n, value);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_overflow_into_errors_not_aborts() {
        assert_eq!(elements(&[3, 5, 7]), Some(105));
        assert_eq!(elements(&[usize::MAX, 2]), None);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(bytes_of::<u32>(usize::MAX), None);
        let what = || "--lora-rank 100000000000: the adapter".to_string();
        let e = check(&what, None).unwrap_err();
        assert!(e.to_string().starts_with("--lora-rank 100000000000: the adapter needs more memory than a 64-bit size"), "{e}");
        // far beyond any machine: refused before the allocator is asked (where the platform tells)
        let mut v: Vec<f32> = Vec::new();
        let e = reserve(&mut v, usize::MAX / 8, &what).unwrap_err();
        assert_eq!(e.bytes, Some((usize::MAX / 8) as u64 * 4));
        assert!(e.to_string().starts_with(&format!("--lora-rank 100000000000: the adapter needs {} of memory, but", human(e.bytes.unwrap()))), "{e}");
        assert!(v.capacity() == 0);
        // small requests just work
        let v = vec(10, 1.5f32, &what).unwrap();
        assert_eq!(v, [1.5; 10]);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1073741824"), Some(1 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1G"), None);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(812), "812 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(human(19_200_000_000_000), "17.5 TiB");
    }
}
