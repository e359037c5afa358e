//! Structured random request streams for the differential framing tests: one request or a
//! pipelined pair, each built from a framing choice (Content-Length, Transfer-Encoding, both,
//! neither) and then mutated where framing bugs live: duplicated, spaced, re-cased or obs-text
//! Content-Length and Transfer-Encoding values, chunk sizes and extensions, line endings, and
//! header names with odd bytes. Deterministic: a seed gives the same bytes on every run.

#![allow(dead_code)]

/// SplitMix64: small, seedable, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0..n
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// true with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, items: &[&'static [u8]]) -> &'static [u8] {
        items[self.below(items.len())]
    }
}

/// Spellings of the Content-Length field name: case variants, then odd ones.
const CL_NAMES: &[&[u8]] = &[
    b"Content-Length",
    b"content-length",
    b"CONTENT-LENGTH",
    b"Content-Length ",
    b"Content-Length\t",
    b"Content_Length",
    b"Content-Length\x00",
    b" Content-Length",
    b"Content-L\xe9ngth",
];

const TE_NAMES: &[&[u8]] = &[
    b"Transfer-Encoding",
    b"transfer-encoding",
    b"TRANSFER-ENCODING",
    b"Transfer-Encoding ",
    b"Transfer_Encoding",
    b"Transfer-Encoding\x0b",
    b"\tTransfer-Encoding",
];

/// Transfer-Encoding values for a chunked body; the later ones are wrong in one way each.
const TE_VALUES: &[&[u8]] = &[
    b"chunked",
    b"Chunked",
    b"CHUNKED",
    b" chunked ",
    b"gzip, chunked",
    b", chunked",
    b"chunked,",
    b"identity, chunked",
    b"chunked, chunked",
    b"chunked, gzip",
    b"chunked;q=1",
    b"\"chunked\"",
    b"chunk",
    b"chunked\x80",
    b"xchunked",
    b"",
];

/// Extra field lines: ordinary, obs-text in a value (valid), and odd names (invalid).
const FILLERS: &[&[u8]] = &[
    b"Accept: */*",
    b"X-Note: caf\xc3\xa9 \x80\xff",
    b"X-Tab:\tv\t",
    b"X-Empty:",
    b"X Y: 1",
    b"X\x01Y: 1",
    b"\"X\": 1",
    b"X\x7fY: 1",
    b": no-name",
    b"X-\xe9: 1",
    b"X-Ctl: a\x01b",
    b"no colon here",
];

/// Chunk extensions: valid ones first, then invalid ones.
const EXTS: &[&[u8]] = &[
    b";a",
    b";a=b",
    b" ;a=\"q \\\" r\"",
    b";a = b ; c",
    b"\t;x=\"\"",
    b";",
    b";a=",
    b";a b",
    b";a=b=c",
    b";a=\"open",
    b";a ",
    b" ",
    b";\x01",
    b";a=\"\x00\"",
];

const TRAILERS: &[&[u8]] = &[
    b"Etag: 1",
    b"Server-Timing: x",
    b"X-Trailer: 1",
    b"Bad Trailer: 1",
];

/// A random body of `n` letters.
fn body(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| b'a' + rng.below(26) as u8).collect()
}

/// A Content-Length value for a body of `n` bytes, sometimes wrong or oddly written.
fn cl_value(rng: &mut Rng, n: usize) -> Vec<u8> {
    let v = n.to_string();
    match rng.below(14) {
        0 => format!("{v}, {v}").into_bytes(),
        1 => format!("00{v}").into_bytes(),
        2 => format!("+{v}").into_bytes(),
        3 => format!("{}", n + 1).into_bytes(),
        4 => format!("{v}, {}", n + 1).into_bytes(),
        5 => format!("{v} ").into_bytes(),
        6 => format!("0x{n:x}").into_bytes(),
        7 => [v.as_bytes(), b"\x80"].concat(),
        8 => format!("{v},").into_bytes(),
        9 if n >= 10 => format!("{} {}", &v[..1], &v[1..]).into_bytes(),
        10 => Vec::new(),
        11 if n > 0 => format!("{}", n - 1).into_bytes(),
        _ => v.into_bytes(),
    }
}

/// A chunked encoding of `data`, with mutated sizes, extensions and terminators now and then.
fn chunked_body(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = (1 + rng.below(8)).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        let size = match rng.below(12) {
            0 => format!("{n:X}"),
            1 => format!("00{n:x}"),
            2 => format!("{:x}", n + 1),
            3 if n > 1 => format!("{:x}", n - 1),
            _ => format!("{n:x}"),
        };
        out.extend_from_slice(size.as_bytes());
        if rng.one_in(4) {
            out.extend_from_slice(rng.bytes(EXTS));
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(piece);
        out.extend_from_slice(match rng.below(20) {
            0 => b"\n",
            1 => b"",
            2 => b"\r",
            _ => b"\r\n",
        });
    }
    out.extend_from_slice(match rng.below(6) {
        0 => b"000",
        _ => b"0",
    });
    if rng.one_in(6) {
        out.extend_from_slice(rng.bytes(EXTS));
    }
    out.extend_from_slice(b"\r\n");
    if rng.one_in(6) {
        out.extend_from_slice(rng.bytes(TRAILERS));
        out.extend_from_slice(b"\r\n");
    }
    if !rng.one_in(30) {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One request: head lines (without line ends) and what follows the head.
fn request(rng: &mut Rng, index: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    let method = *rng.pick(&[&b"POST"[..], b"PUT", b"GET"]);
    let mut lines = vec![[method, format!(" /d/{index} HTTP/1.1").as_bytes()].concat()];
    let mut fields: Vec<Vec<u8>> = vec![b"Host: h".to_vec()];
    let len = rng.below(20);
    let data = body(rng, len);
    let clean = rng.one_in(3);
    let name = |rng: &mut Rng, names: &[&'static [u8]]| -> Vec<u8> {
        if clean || !rng.one_in(4) {
            names[rng.below(3)].to_vec()
        } else {
            rng.bytes(names).to_vec()
        }
    };
    let rest = match rng.below(6) {
        // Content-Length.
        0 | 1 => {
            let v = if clean {
                data.len().to_string().into_bytes()
            } else {
                cl_value(rng, data.len())
            };
            fields.push([name(rng, CL_NAMES), b": ".to_vec(), v].concat());
            if !clean && rng.one_in(5) {
                let v = cl_value(rng, data.len());
                fields.push([name(rng, CL_NAMES), b": ".to_vec(), v].concat());
            }
            data
        }
        // Transfer-Encoding: chunked.
        2 | 3 => {
            let v = if clean {
                b"chunked".to_vec()
            } else {
                rng.bytes(TE_VALUES).to_vec()
            };
            if !clean && rng.one_in(6) {
                fields.push([name(rng, TE_NAMES), b": gzip".to_vec()].concat());
            }
            fields.push([name(rng, TE_NAMES), b": ".to_vec(), v].concat());
            if clean {
                let mut out = Vec::new();
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let n = (1 + rng.below(8)).min(rest.len());
                    out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                    out.extend_from_slice(&rest[..n]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                out.extend_from_slice(b"0\r\n\r\n");
                out
            } else {
                chunked_body(rng, &data)
            }
        }
        // Both.
        4 => {
            fields.push(
                [
                    name(rng, CL_NAMES),
                    b": ".to_vec(),
                    cl_value(rng, data.len()),
                ]
                .concat(),
            );
            fields.push([name(rng, TE_NAMES), b": chunked".to_vec()].concat());
            if rng.one_in(2) {
                fields.reverse();
            }
            chunked_body(rng, &data)
        }
        // Neither: no body.
        _ => Vec::new(),
    };
    if !clean && rng.one_in(3) {
        let at = rng.below(fields.len() + 1);
        fields.insert(at, rng.bytes(FILLERS).to_vec());
    }
    if !clean && rng.one_in(12) {
        fields.push(b"Host: h".to_vec());
    }
    lines.extend(fields);
    (lines, rest)
}

/// One generated stream: one request, or a pipelined pair, with line endings mutated now and then.
pub fn stream(seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let count = 1 + usize::from(rng.one_in(3));
    let mut out = Vec::new();
    for i in 0..count {
        if rng.one_in(10) {
            out.extend_from_slice(b"\r\n");
        }
        let (lines, rest) = request(&mut rng, i);
        for line in lines {
            out.extend_from_slice(&line);
            out.extend_from_slice(match rng.below(40) {
                0 => b"\n",
                1 => b"\r",
                2 => b"\r\r\n",
                3 => b"\r\n ",
                _ => b"\r\n",
            });
        }
        out.extend_from_slice(match rng.below(40) {
            0 => b"\n",
            _ => b"\r\n",
        });
        out.extend_from_slice(&rest);
    }
    out
}
