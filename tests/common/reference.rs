//! A strict RFC 9112 message-boundary reference for request streams, written from the RFC and
//! sharing nothing with ringway's codec: the oracle of the differential framing tests (the HTTP
//! Garden method). Given the bytes a client sent, it says which requests they hold, where each
//! one's body ends, and where (and why) the stream stops being valid HTTP/1.1.
//!
//! Strict means: wherever RFC 9112 lets a recipient choose, it takes the choice that rejects or
//! the one a careful gateway must take (named at each rule). It only needs what framing needs:
//! the request line, field syntax, Host count, Content-Length, Transfer-Encoding, chunked bodies.
//! Origin-form targets only (the generator sends nothing else); HTTP/1.1 and HTTP/1.0.

#![allow(dead_code)]

/// One request the reference delimits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    /// The body's data (chunked framing removed).
    pub body: Vec<u8>,
    /// The Host field value.
    pub host: Vec<u8>,
    /// Transfer codings listed (lower case), in order; empty without Transfer-Encoding.
    pub codings: Vec<Vec<u8>>,
    /// Trailer field names (lower case).
    pub trailers: Vec<Vec<u8>>,
    /// The connection ends after this request (RFC 9112 §9.3): nothing after it is read.
    pub closes: bool,
}

/// How a stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every byte belongs to a complete, valid request.
    Complete,
    /// The request after the last complete one is invalid, for this reason.
    Reject(&'static str),
    /// The bytes stop inside a request that is valid so far.
    Incomplete,
}

/// The requests of a stream, in order, and how it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub messages: Vec<Message>,
    pub end: End,
    /// With [`End::Incomplete`] after the head: the request so far (its codings and trailers
    /// seen, its body so far).
    pub partial: Option<Message>,
}

/// Why one request could not be delimited.
enum Stop {
    Reject(&'static str),
    Incomplete,
    /// Incomplete after the head: the message so far.
    IncompleteBody(Box<Message>),
}

/// Delimits every request in `bytes`.
pub fn parse_stream(bytes: &[u8]) -> Parsed {
    let mut messages = Vec::new();
    let mut pos = 0;
    loop {
        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line received before the
        // request-line.
        while bytes[pos..].starts_with(b"\r\n") {
            pos += 2;
        }
        if pos == bytes.len() {
            return Parsed {
                messages,
                end: End::Complete,
                partial: None,
            };
        }
        match parse_message(bytes, pos) {
            Ok((m, next)) => {
                let closes = m.closes;
                messages.push(m);
                pos = next;
                if closes {
                    // The server closes after answering: what follows is never read.
                    return Parsed {
                        messages,
                        end: End::Complete,
                        partial: None,
                    };
                }
            }
            Err(stop) => {
                let (end, partial) = match stop {
                    Stop::Reject(why) => (End::Reject(why), None),
                    Stop::Incomplete => (End::Incomplete, None),
                    Stop::IncompleteBody(m) => (End::Incomplete, Some(*m)),
                };
                return Parsed {
                    messages,
                    end,
                    partial,
                };
            }
        }
    }
}

/// One line from `pos`: its bytes without the CRLF, and where the next line starts.
///
/// RFC 9112 §2.2: a recipient MAY recognize a bare LF as a line terminator (strict: no); a bare
/// CR MUST be rejected or replaced (strict: rejected).
fn line(bytes: &[u8], pos: usize) -> Result<(&[u8], usize), Stop> {
    let rest = &bytes[pos..];
    match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        None => Err(Stop::Incomplete),
        Some(i) if rest[i] == b'\n' => Err(Stop::Reject("bare LF")),
        Some(i) => match rest.get(i + 1) {
            None => Err(Stop::Incomplete),
            Some(b'\n') => Ok((&rest[..i], pos + i + 2)),
            Some(_) => Err(Stop::Reject("bare CR")),
        },
    }
}

/// tchar (RFC 9110 §5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| tchar(b))
}

fn ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s
        && ows(*first)
    {
        s = rest;
    }
    while let [rest @ .., last] = s
        && ows(*last)
    {
        s = rest;
    }
    s
}

/// field-value bytes: field-vchar (VCHAR / obs-text), SP, HTAB (RFC 9110 §5.5).
fn field_value_ok(v: &[u8]) -> bool {
    v.iter()
        .all(|&b| ows(b) || (0x21..=0x7e).contains(&b) || b >= 0x80)
}

/// One field line: `field-name ":" OWS field-value OWS` (RFC 9112 §5). Returns the lower-cased
/// name and the trimmed value.
fn field(l: &[u8]) -> Result<(Vec<u8>, &[u8]), Stop> {
    if l.first().is_some_and(|&b| ows(b)) {
        // RFC 9112 §5.2: obs-fold; a server MUST reject it or replace it (strict: reject).
        return Err(Stop::Reject("obs-fold"));
    }
    let Some(colon) = l.iter().position(|&b| b == b':') else {
        return Err(Stop::Reject("field line without colon"));
    };
    let name = &l[..colon];
    // RFC 9112 §5.1: no whitespace between name and colon (MUST reject with 400).
    if !token(name) {
        return Err(Stop::Reject("field name not a token"));
    }
    let value = trim(&l[colon + 1..]);
    if !field_value_ok(value) {
        return Err(Stop::Reject("invalid field value byte"));
    }
    Ok((name.to_ascii_lowercase(), value))
}

/// The elements of a list-based field, empty elements dropped (RFC 9110 §5.6.1.2: a recipient
/// MUST parse and ignore a reasonable number of empty list elements).
fn elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|e| !e.is_empty())
}

fn parse_message(bytes: &[u8], pos: usize) -> Result<(Message, usize), Stop> {
    // request-line = method SP request-target SP HTTP-version (RFC 9112 §3).
    let (rl, mut pos) = line(bytes, pos)?;
    let parts: Vec<&[u8]> = rl.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(Stop::Reject("request line not three parts"));
    };
    if !token(method) {
        return Err(Stop::Reject("method not a token"));
    }
    // origin-form = absolute-path [ "?" query ]; every byte visible ASCII, no fragment.
    if target.first() != Some(&b'/')
        || !target
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b'#')
    {
        return Err(Stop::Reject("request target"));
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(Stop::Reject("version")),
    };
    let (mut close, mut keep_alive) = (false, false);

    let mut hosts = 0;
    let mut host = Vec::new();
    let mut lengths: Vec<u64> = Vec::new();
    let mut te_lines = 0;
    let mut codings: Vec<Vec<u8>> = Vec::new();
    loop {
        let (l, next) = line(bytes, pos)?;
        pos = next;
        if l.is_empty() {
            break;
        }
        let (name, value) = field(l)?;
        match &name[..] {
            b"host" => {
                hosts += 1;
                host = value.to_vec();
            }
            b"content-length" => {
                // Content-Length = 1*DIGIT (RFC 9110 §8.6); a list of identical values MAY be
                // accepted as that value (RFC 9112 §6.3 item 5), and is here.
                let mut any = false;
                for e in value.split(|&b| b == b',').map(trim) {
                    if e.is_empty() || e.len() > 18 || !e.iter().all(u8::is_ascii_digit) {
                        return Err(Stop::Reject("content-length value"));
                    }
                    let n = std::str::from_utf8(e).unwrap().parse::<u64>().unwrap();
                    lengths.push(n);
                    any = true;
                }
                if !any {
                    return Err(Stop::Reject("content-length value"));
                }
            }
            b"connection" => {
                for e in elements(value) {
                    close |= e.eq_ignore_ascii_case(b"close");
                    keep_alive |= e.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            b"transfer-encoding" => {
                te_lines += 1;
                for e in elements(value) {
                    // transfer-coding = token *( OWS ";" OWS transfer-parameter ): no coding a
                    // request may use defines a parameter, so one here is refused.
                    if !token(e) {
                        return Err(Stop::Reject("transfer coding not a token"));
                    }
                    codings.push(e.to_ascii_lowercase());
                }
            }
            _ => {}
        }
    }
    // RFC 9112 §3.2: exactly one Host in an HTTP/1.1 request, never more than one, and a valid
    // one, else 400.
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(Stop::Reject("host count"));
    }
    if hosts == 1 && !host_ok(&host) {
        return Err(Stop::Reject("host value"));
    }
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        return Err(Stop::Reject("conflicting content-length"));
    }
    let mut m = Message {
        method: method.to_vec(),
        target: target.to_vec(),
        body: Vec::new(),
        host,
        codings,
        trailers: Vec::new(),
        // RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
        closes: close || (http10 && !keep_alive),
    };
    if te_lines > 0 && http10 {
        // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
        return Err(Stop::Reject("transfer-encoding in HTTP/1.0"));
    }
    if te_lines > 0 {
        // RFC 9112 §6.3 item 3: Transfer-Encoding with Content-Length "ought to be handled as an
        // error" (strict: it is).
        if !lengths.is_empty() {
            return Err(Stop::Reject("content-length and transfer-encoding"));
        }
        // §6.3 item 4: in a request, chunked must be the final coding, else 400; §6.1: chunked
        // MUST NOT be applied more than once.
        if m.codings.last().map(|c| &c[..]) != Some(b"chunked") {
            return Err(Stop::Reject("chunked not final"));
        }
        if m.codings.iter().filter(|c| &c[..] == b"chunked").count() > 1 {
            return Err(Stop::Reject("chunked twice"));
        }
        pos = match chunked(bytes, pos, &mut m) {
            Err(Stop::Incomplete) => return Err(Stop::IncompleteBody(Box::new(m))),
            r => r?,
        };
    } else if let Some(&n) = lengths.first() {
        let n = n as usize;
        if bytes.len() - pos < n {
            m.body = bytes[pos..].to_vec();
            return Err(Stop::IncompleteBody(Box::new(m)));
        }
        m.body = bytes[pos..pos + n].to_vec();
        pos += n;
    }
    Ok((m, pos))
}

/// Host = uri-host [ ":" port ] (RFC 9110 §7.2); uri-host = IP-literal / IPv4address / reg-name,
/// port = *DIGIT (RFC 3986 §3.2.2, §3.2.3). IPv6address is approximated as 1*( HEXDIG / ":" /
/// "." ) inside the brackets; IPvFuture is as written.
fn host_ok(h: &[u8]) -> bool {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let sub_delim = |b: u8| b"!$&'()*+,;=".contains(&b);
    let rest = if let Some(inner_end) = h
        .strip_prefix(b"[")
        .and_then(|r| r.iter().position(|&b| b == b']'))
    {
        let inner = &h[1..1 + inner_end];
        let ok = match inner {
            [b'v' | b'V', tail @ ..] => {
                let dot = tail.iter().position(|&b| b == b'.');
                match dot {
                    Some(d) if d > 0 && d + 1 < tail.len() => {
                        tail[..d].iter().all(u8::is_ascii_hexdigit)
                            && tail[d + 1..]
                                .iter()
                                .all(|&b| unreserved(b) || sub_delim(b) || b == b':')
                    }
                    _ => false,
                }
            }
            _ => {
                !inner.is_empty()
                    && inner
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            }
        };
        if !ok {
            return false;
        }
        &h[inner_end + 2..]
    } else {
        let end = h.iter().position(|&b| b == b':').unwrap_or(h.len());
        let name = &h[..end];
        let mut i = 0;
        while i < name.len() {
            let b = name[i];
            if b == b'%' {
                if !(name.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && name.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
                continue;
            }
            if !(unreserved(b) || sub_delim(b)) {
                return false;
            }
            i += 1;
        }
        &h[end..]
    };
    match rest {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// A chunked body from `pos` (RFC 9112 §7.1); returns where it ends.
fn chunked(bytes: &[u8], mut pos: usize, m: &mut Message) -> Result<usize, Stop> {
    loop {
        // chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF; last-chunk = 1*("0") [ chunk-ext ] CRLF
        let (l, next) = line(bytes, pos)?;
        pos = next;
        let digits = l.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(Stop::Reject("chunk size"));
        }
        if digits > 15 {
            return Err(Stop::Reject("chunk size too large"));
        }
        chunk_ext(&l[digits..])?;
        let size = usize::from_str_radix(std::str::from_utf8(&l[..digits]).unwrap(), 16).unwrap();
        if size == 0 {
            break;
        }
        if bytes.len() - pos < size + 2 {
            // Data still to come, or its CRLF: incomplete unless what is there already differs.
            let have = &bytes[pos..];
            if have.len() > size && have[size] != b'\r' {
                return Err(Stop::Reject("chunk data not followed by CRLF"));
            }
            return Err(Stop::Incomplete);
        }
        m.body.extend_from_slice(&bytes[pos..pos + size]);
        if &bytes[pos + size..pos + size + 2] != b"\r\n" {
            return Err(Stop::Reject("chunk data not followed by CRLF"));
        }
        pos += size + 2;
    }
    // trailer-section = *( field-line CRLF ), then CRLF (RFC 9112 §7.1.2).
    loop {
        let (l, next) = line(bytes, pos)?;
        pos = next;
        if l.is_empty() {
            return Ok(pos);
        }
        let (name, _) = field(l)?;
        m.trailers.push(name);
    }
}

/// chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ) (RFC 9112 §7.1.1),
/// chunk-ext-name = token, chunk-ext-val = token / quoted-string.
fn chunk_ext(mut s: &[u8]) -> Result<(), Stop> {
    let bad = Err(Stop::Reject("chunk extension"));
    let skip_bws = |s: &mut &[u8]| {
        while let [b, rest @ ..] = *s
            && ows(*b)
        {
            *s = rest;
        }
    };
    let take_token = |s: &mut &[u8]| -> bool {
        let n = s.iter().take_while(|&&b| tchar(b)).count();
        *s = &s[n..];
        n > 0
    };
    while !s.is_empty() {
        skip_bws(&mut s);
        let [b';', rest @ ..] = s else { return bad };
        s = rest;
        skip_bws(&mut s);
        if !take_token(&mut s) {
            return bad;
        }
        let mut t = s;
        skip_bws(&mut t);
        if let [b'=', rest @ ..] = t {
            s = rest;
            skip_bws(&mut s);
            if let [b'"', rest @ ..] = s {
                // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 §5.6.4)
                s = rest;
                loop {
                    match s {
                        [b'"', rest @ ..] => {
                            s = rest;
                            break;
                        }
                        [b'\\', c, rest @ ..]
                            if ows(*c) || (0x21..=0x7e).contains(c) || *c >= 0x80 =>
                        {
                            s = rest
                        }
                        [c, rest @ ..]
                            if ows(*c)
                                || *c == 0x21
                                || (0x23..=0x5b).contains(c)
                                || (0x5d..=0x7e).contains(c)
                                || *c >= 0x80 =>
                        {
                            s = rest
                        }
                        _ => return bad,
                    }
                }
            } else if !take_token(&mut s) {
                return bad;
            }
        }
        // After a name or value: the end, or BWS ";" for the next extension (BWS alone before
        // the CRLF is not in the grammar).
        if !s.is_empty() {
            let mut t = s;
            skip_bws(&mut t);
            if !t.starts_with(b";") {
                return bad;
            }
        }
    }
    Ok(())
}
