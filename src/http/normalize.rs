//! Request-target path normalization (RFC 3986 §6.2.2), so that the path ringway routes on is the
//! path the backend sees.
//!
//! A gateway that matches routes on the raw path while the backend decodes and normalizes it can
//! be walked around: `/public/../admin`, `/public/%2e%2e/admin`, `/%61dmin` and `//admin` all reach
//! a backend as `/admin` without matching a `/admin` route. [`normalize_path`] does, in order:
//!
//! 1. percent-encoding normalization (§6.2.2.2): `%XX` of an unreserved character is decoded,
//!    every other `%XX` is written with upper-case hex digits;
//! 2. dot-segment removal (§6.2.2.3, the algorithm of §5.2.4); a `..` that would climb above the
//!    root is an error ([`ErrorKind::PathAboveRoot`]), not silently dropped as §5.2.4 does;
//! 3. repeated slashes merged into one, when [`TargetPolicy::merge_slashes`] is set (the default,
//!    like nginx's `merge_slashes on`).
//!
//! An encoded slash or backslash (`%2F`, `%5C`) and a raw backslash are refused
//! ([`ErrorKind::EncodedSlash`]) unless [`EncodedSlashes::Keep`] is chosen: backends disagree on
//! whether they split segments there, which is the same confusion again.
//!
//! What it must never do: allocate for a path that is already normal (the common case). The check
//! for that is one pass over the bytes; only a path that changes is rewritten, into one `Vec`.

use std::borrow::Cow;

use super::error::ErrorKind;

/// What to do with `%2F`, `%5C` and a raw `\` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EncodedSlashes {
    /// Refuse the request (400 `encoded_slash`). The default.
    #[default]
    Reject,
    /// Keep them as they are (`%2f` is still upper-cased to `%2F`); they never split a segment.
    ///
    /// RFC 3986 §2.2: "URI producing applications should percent-encode data octets that
    /// correspond to characters in the reserved set", and a `%2F` is data, not a separator: some
    /// backends (object stores, APIs with encoded identifiers) need it kept.
    Keep,
}

/// How request-target paths are normalized (config `[server]` `merge_slashes`, `encoded_slashes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TargetPolicy {
    /// Merge repeated slashes (`//a///b` → `/a/b`). Default `true`.
    ///
    /// RFC 3986 does not merge them (an empty segment is a segment, §3.3), which is why this is a
    /// setting; most backends (and nginx's `merge_slashes on`) treat them as one.
    pub merge_slashes: bool,
    /// What to do with encoded slashes and backslashes.
    pub encoded_slashes: EncodedSlashes,
}

impl Default for TargetPolicy {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            encoded_slashes: EncodedSlashes::Reject,
        }
    }
}

/// Normalizes an absolute path (starting with `/`, no query) per the module doc.
///
/// Returns `Cow::Borrowed(path)` when the path is already normal: no allocation, the common case.
/// The result is idempotent: normalizing it again borrows.
///
/// # Errors
///
/// [`ErrorKind::PathAboveRoot`] for a `..` above the root, [`ErrorKind::EncodedSlash`] for
/// `%2F`/`%5C`/`\` under [`EncodedSlashes::Reject`], [`ErrorKind::InvalidTarget`] for a `%` not
/// followed by two hex digits or a path not starting with `/`. All are 400.
pub fn normalize_path<'a>(
    path: &'a [u8],
    policy: &TargetPolicy,
) -> Result<Cow<'a, [u8]>, ErrorKind> {
    if path.first() != Some(&b'/') {
        return Err(ErrorKind::InvalidTarget);
    }
    if is_normal(path, policy) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = normalize_percent(path, policy)?;
    let out = remove_dot_segments(&decoded, policy.merge_slashes)?;
    Ok(Cow::Owned(out))
}

/// One pass: `true` when [`normalize_path`] would return `path` unchanged. Anything doubtful
/// (including every error) answers `false` and goes to the slow path, which decides.
fn is_normal(path: &[u8], policy: &TargetPolicy) -> bool {
    let keep = policy.encoded_slashes == EncodedSlashes::Keep;
    let mut seg_start = 1;
    let mut i = 1;
    while i <= path.len() {
        let b = path.get(i).copied().unwrap_or(b'/');
        match b {
            b'/' => {
                let seg = &path[seg_start..i];
                let empty_ok = !policy.merge_slashes || i == path.len();
                if seg == b"." || seg == b".." || (seg.is_empty() && !empty_ok) {
                    return false;
                }
                seg_start = i + 1;
            }
            b'%' => {
                let (Some(h), Some(l)) = (path.get(i + 1), path.get(i + 2)) else {
                    return false;
                };
                let (Some(hv), Some(lv)) = (upper_hex(*h), upper_hex(*l)) else {
                    return false;
                };
                let v = hv << 4 | lv;
                if is_unreserved(v) || ((v == b'/' || v == b'\\') && !keep) {
                    return false;
                }
                i += 2;
            }
            b'\\' if !keep => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

/// The value of an upper-case hex digit; `None` for anything else (lower case included).
fn upper_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The value of a hex digit of either case.
fn any_hex(b: u8) -> Option<u8> {
    upper_hex(b.to_ascii_uppercase())
}

/// unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~" (RFC 3986 §2.3).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Step 1: decodes `%XX` of unreserved characters, upper-cases the rest, applies the policy to
/// encoded slashes and backslashes.
fn normalize_percent(path: &[u8], policy: &TargetPolicy) -> Result<Vec<u8>, ErrorKind> {
    let keep = policy.encoded_slashes == EncodedSlashes::Keep;
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' => {
                let hex = |at: usize| path.get(at).copied().and_then(any_hex);
                let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(ErrorKind::InvalidTarget);
                };
                let v = h << 4 | l;
                if is_unreserved(v) {
                    out.push(v);
                } else if (v == b'/' || v == b'\\') && !keep {
                    return Err(ErrorKind::EncodedSlash);
                } else {
                    out.extend_from_slice(&[
                        b'%',
                        path[i + 1].to_ascii_uppercase(),
                        path[i + 2].to_ascii_uppercase(),
                    ]);
                }
                i += 3;
            }
            b'\\' if !keep => return Err(ErrorKind::EncodedSlash),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Steps 2 and 3 over a path starting with `/`: segments are appended to the output one by one,
/// `.` is dropped, `..` removes the last output segment (an error when there is none), and empty
/// segments are dropped when merging, except a trailing one (`/a/` keeps its slash).
fn remove_dot_segments(path: &[u8], merge_slashes: bool) -> Result<Vec<u8>, ErrorKind> {
    let mut out = Vec::with_capacity(path.len());
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            b"." => {}
            b".." => {
                let Some(cut) = out.iter().rposition(|&b| b == b'/') else {
                    return Err(ErrorKind::PathAboveRoot);
                };
                out.truncate(cut);
            }
            b"" if merge_slashes && !last => continue,
            _ => {
                out.push(b'/');
                out.extend_from_slice(seg);
                continue;
            }
        }
        // After `.` or `..` the path names a directory: `/a/b/..` is `/a/`.
        if last {
            out.push(b'/');
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

#[cfg(test)]
#[path = "normalize_tests.rs"]
mod tests;
