//! `Date` field values (RFC 9110 §5.6.7 IMF-fixdate), formatted without allocation.

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const IMF_FIXDATE_LEN: usize = 29;

/// Formats `unix_secs` (seconds since 1970-01-01 UTC) as an IMF-fixdate (`httpdate`, the
/// formatter hyper uses; written into a stack array, no allocation).
pub fn imf_fixdate(unix_secs: u64) -> [u8; IMF_FIXDATE_LEN] {
    use std::io::Write;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs);
    let mut out = [0u8; IMF_FIXDATE_LEN];
    // An IMF-fixdate is always 29 bytes, so the write fills the array exactly.
    write!(&mut out[..], "{}", httpdate::HttpDate::from(t)).expect("29-byte IMF-fixdate");
    out
}

#[cfg(test)]
mod tests {
    use super::imf_fixdate;

    #[test]
    fn known_dates() {
        for (secs, want) in [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_798_761_599, "Thu, 31 Dec 2026 23:59:59 GMT"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
        ] {
            assert_eq!(
                std::str::from_utf8(&imf_fixdate(secs)).unwrap(),
                want,
                "{secs}"
            );
        }
    }
}
