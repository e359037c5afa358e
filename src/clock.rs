//! The current `Date` field value, formatted once per second per thread (nginx caches its time
//! strings the same way): every response the gateway writes carries one, at the cost of a clock
//! read and a 29-byte copy.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::http::{IMF_FIXDATE_LEN, imf_fixdate};

thread_local! {
    /// (unix second, its IMF-fixdate); second `u64::MAX` = not formatted yet.
    static CACHE: Cell<(u64, [u8; IMF_FIXDATE_LEN])> =
        const { Cell::new((u64::MAX, [0; IMF_FIXDATE_LEN])) };
}

/// Now as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date() -> [u8; IMF_FIXDATE_LEN] {
    now().1
}

/// The current unix second and its IMF-fixdate (the second lets callers cache what they render
/// with it).
pub fn now() -> (u64, [u8; IMF_FIXDATE_LEN]) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (cached, text) = CACHE.get();
    if cached == secs {
        return (secs, text);
    }
    let text = imf_fixdate(secs);
    CACHE.set((secs, text));
    (secs, text)
}
