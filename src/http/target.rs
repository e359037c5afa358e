//! Request-target forms (RFC 9112 §3.2) and Host / authority validation (RFC 9110 §7.2, RFC 3986 §3.2).

use super::error::ErrorKind;

/// Which of the four request-target forms a request used (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetForm {
    /// `/path?query`: the usual form.
    Origin,
    /// `http://authority/path?query`: sent to proxies; the authority replaces Host.
    Absolute,
    /// `host:port`: CONNECT only.
    Authority,
    /// `*`: OPTIONS only.
    Asterisk,
}

/// Byte ranges (relative to the target) of the parts of a request-target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TargetParts {
    pub form: TargetForm,
    /// Path, without query. `None` for an absolute-form target with an empty path (means `/`),
    /// and for authority / asterisk form.
    pub path: Option<(usize, usize)>,
    pub query: Option<(usize, usize)>,
    pub authority: Option<(usize, usize)>,
}

/// Splits and validates a request-target.
///
/// Bytes must be visible ASCII (no obs-text, no `#`: a fragment is never sent, RFC 9112 §3.2).
pub(crate) fn parse_target(t: &[u8]) -> Result<TargetParts, ErrorKind> {
    if t.is_empty() || !t.iter().all(|&b| (b'!'..=b'~').contains(&b) && b != b'#') {
        return Err(ErrorKind::InvalidTarget);
    }
    if t == b"*" {
        return Ok(TargetParts {
            form: TargetForm::Asterisk,
            path: None,
            query: None,
            authority: None,
        });
    }
    if t[0] == b'/' {
        let (path, query) = split_query(t, 0);
        return Ok(TargetParts {
            form: TargetForm::Origin,
            path: Some(path),
            query,
            authority: None,
        });
    }
    if let Some(scheme_end) = scheme_len(t)
        && t[scheme_end..].starts_with(b"://")
    {
        let scheme = &t[..scheme_end];
        if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
            return Err(ErrorKind::InvalidTarget);
        }
        let a_start = scheme_end + 3;
        let a_end = t[a_start..]
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .map_or(t.len(), |p| a_start + p);
        let authority = &t[a_start..a_end];
        // RFC 9110 §4.2.1: an http URI has a non-empty host; §4.2.4: userinfo is deprecated and
        // treated as an error.
        if authority.is_empty() || !is_valid_host(authority) {
            return Err(ErrorKind::InvalidHost);
        }
        let (path, query) = split_query(t, a_end);
        let path = if path.0 == path.1 { None } else { Some(path) };
        return Ok(TargetParts {
            form: TargetForm::Absolute,
            path,
            query,
            authority: Some((a_start, a_end)),
        });
    }
    // authority-form = uri-host ":" port, port required (RFC 9112 §3.2.3).
    match t.iter().rposition(|&b| b == b':') {
        Some(c) if c + 1 < t.len() && is_valid_host(t) && !t.ends_with(b"]") => Ok(TargetParts {
            form: TargetForm::Authority,
            path: None,
            query: None,
            authority: Some((0, t.len())),
        }),
        _ => Err(ErrorKind::InvalidTarget),
    }
}

/// `(path, query)` ranges of `t[from..]`.
fn split_query(t: &[u8], from: usize) -> ((usize, usize), Option<(usize, usize)>) {
    match memchr::memchr(b'?', &t[from..]) {
        Some(q) => ((from, from + q), Some((from + q + 1, t.len()))),
        None => ((from, t.len()), None),
    }
}

/// Length of a URI scheme at the front of `t`: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 §3.1).
fn scheme_len(t: &[u8]) -> Option<usize> {
    if !t.first()?.is_ascii_alphabetic() {
        return None;
    }
    Some(
        t.iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
            .unwrap_or(t.len()),
    )
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): IP-literal, IPv4 or reg-name, then an optional port
/// of at most 5 digits not above 65535. An empty value is handled by the caller.
pub(crate) fn is_valid_host(h: &[u8]) -> bool {
    let (host, rest) = if h.first() == Some(&b'[') {
        let Some(close) = memchr::memchr(b']', h) else {
            return false;
        };
        let inner = &h[1..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'))
        {
            return false;
        }
        (&h[..=close], &h[close + 1..])
    } else {
        let end = memchr::memchr(b':', h).unwrap_or(h.len());
        (&h[..end], &h[end..])
    };
    if host.is_empty() || !is_reg_name_or_literal(host) {
        return false;
    }
    match rest {
        [] => true,
        [b':', port @ ..] => {
            port.len() <= 5
                && port.iter().all(u8::is_ascii_digit)
                && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535
        }
        _ => false,
    }
}

/// reg-name = *( unreserved / pct-encoded / sub-delims ) (RFC 3986 §3.2.2); an IP-literal was
/// checked by the caller.
fn is_reg_name_or_literal(host: &[u8]) -> bool {
    if host[0] == b'[' {
        return true;
    }
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            match (host.get(i + 1), host.get(i + 2)) {
                (Some(x), Some(y)) if x.is_ascii_hexdigit() && y.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
            continue;
        }
        let ok = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_rfc9110_7_2() {
        for ok in [
            &b"example.com"[..],
            b"example.com:8080",
            b"a",
            b"127.0.0.1:1",
            b"[::1]",
            b"[::1]:80",
            b"ex%41mple",
            b"h:",
        ] {
            assert!(is_valid_host(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b":80"[..],
            b"a b",
            b"user@host",
            b"host:99999",
            b"host:8a",
            b"[::1",
            b"[]",
            b"host:80:80",
            b"a/b",
            b"%4",
            b"[::1]x",
            b"h\"x",
        ] {
            assert!(!is_valid_host(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn target_forms_rfc9112_3_2() {
        let p = parse_target(b"/a/b?x=1").unwrap();
        assert_eq!(
            (p.form, p.path, p.query),
            (TargetForm::Origin, Some((0, 4)), Some((5, 8)))
        );
        let p = parse_target(b"http://h.example:81?q").unwrap();
        assert_eq!(
            (p.form, p.path, p.query, p.authority),
            (TargetForm::Absolute, None, Some((20, 21)), Some((7, 19)))
        );
        let p = parse_target(b"HTTPS://h/x").unwrap();
        assert_eq!((p.form, p.path), (TargetForm::Absolute, Some((9, 11))));
        assert_eq!(
            parse_target(b"h.example:443").unwrap().form,
            TargetForm::Authority
        );
        assert_eq!(parse_target(b"*").unwrap().form, TargetForm::Asterisk);
        assert_eq!(parse_target(b"ftp://h/x"), Err(ErrorKind::InvalidTarget));
        assert_eq!(parse_target(b"http://u@h/x"), Err(ErrorKind::InvalidHost));
        assert_eq!(parse_target(b"http:///x"), Err(ErrorKind::InvalidHost));
        assert_eq!(parse_target(b"/a#frag"), Err(ErrorKind::InvalidTarget));
        assert_eq!(parse_target(b"/caf\xc3\xa9"), Err(ErrorKind::InvalidTarget));
        assert_eq!(parse_target(b"h.example"), Err(ErrorKind::InvalidTarget));
        assert_eq!(parse_target(b"h.example:"), Err(ErrorKind::InvalidTarget));
        assert_eq!(parse_target(b"**"), Err(ErrorKind::InvalidTarget));
    }
}
