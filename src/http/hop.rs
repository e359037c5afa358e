//! Hop-by-hop fields (RFC 9110 §7.6.1): what describes one connection and must not be forwarded.
//!
//! A proxy removes the standard connection fields and every field the Connection header names,
//! before it adds its own. This module only decides; [`super::write`] applies it.

use super::headers::{HeaderRange, connection_lists};

/// Fields that belong to a single connection (RFC 9110 §7.6.1, RFC 9112 §6.1 for TE and
/// Transfer-Encoding, §7.8 for Upgrade), plus the non-standard Proxy-Connection that clients still
/// send. Lowercase.
const HOP_BY_HOP: [&[u8]; 6] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"transfer-encoding",
    b"upgrade",
];

/// Whether `name` is a hop-by-hop field by definition (case-insensitive). Fields named by the
/// message's Connection header are hop-by-hop too; that needs the head, see the writers.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Fields of a client request a gateway-made sub-request (a fan-out call) never copies, even when
/// configured to: the client's own framing (Content-Length, Expect; a copied Content-Length on a
/// bodiless call would desync a pooled backend connection), what the gateway writes itself (Host,
/// Via, X-Forwarded-*), and the Trailer announcement. Hop-by-hop fields are refused too, see
/// [`not_for_subrequests`].
const OWN_REQUEST_FIELDS: [&[u8]; 8] = [
    b"host",
    b"content-length",
    b"expect",
    b"trailer",
    b"via",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
];

/// Whether a client request field must never be copied into a gateway-made sub-request: it is
/// hop-by-hop, or describes the client's own message, or is one the gateway writes itself.
pub fn not_for_subrequests(name: &[u8]) -> bool {
    is_hop_by_hop(name)
        || OWN_REQUEST_FIELDS
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether a field must be dropped when forwarding: hop-by-hop by definition (Upgrade excepted
/// while tunnelling), or named in Connection. `conn_other` says Connection names anything beyond
/// close / keep-alive / upgrade, which spares the scan in the usual case.
pub(crate) fn drop_when_forwarding(
    name: &[u8],
    head: &[u8],
    ranges: &[HeaderRange],
    conn_other: bool,
    tunnel: bool,
) -> bool {
    if tunnel && name.eq_ignore_ascii_case(b"upgrade") {
        return false;
    }
    is_hop_by_hop(name) || (conn_other && connection_lists(head, ranges, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_rfc9110_7_6_1() {
        for h in [
            &b"Connection"[..],
            b"KEEP-ALIVE",
            b"proxy-connection",
            b"TE",
            b"Transfer-Encoding",
            b"upgrade",
        ] {
            assert!(is_hop_by_hop(h));
        }
        for e in [&b"content-length"[..], b"host", b"trailer", b"x-te", b"via"] {
            assert!(!is_hop_by_hop(e));
        }
    }
}
