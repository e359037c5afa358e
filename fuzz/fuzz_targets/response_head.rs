//! Response head parser (as the answer to GET and to HEAD), then the client-side writer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::{
    BytesMut, HeadScanner, Limits, Method, Status, Version, parse_response_head,
    write_forward_response_head,
};

fuzz_target!(|data: &[u8]| {
    for method in [Method::Get, Method::Head] {
        let mut buf = BytesMut::from(data);
        let limits = Limits {
            max_head_bytes: 4096,
            max_headers: 32,
        };
        if let Ok(Status::Complete(head)) =
            parse_response_head(&mut buf, &mut HeadScanner::new(), &limits, method)
        {
            let _ = (
                head.keep_alive_timeout(),
                head.is_json(),
                head.interim(Version::Http11, false, false),
            );
            let mut out = BytesMut::new();
            let _ = write_forward_response_head(&mut out, &head, Version::Http10, true, None);
        }
    }
});
