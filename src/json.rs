//! A JSON text validator (RFC 8259) over a body in pieces: structure and UTF-8, one pass, no
//! copy, no byte-at-a-time reads through `io::Read`. Used by the fan-out to decide whether a
//! backend's JSON-labelled body may be embedded as is (an invalid one would make the answer
//! invalid JSON).
//!
//! An explicit state machine with the container stack in a bit set, so it resumes at any byte of
//! any piece. Strings, where almost all of a body's bytes are, are scanned eight bytes at a time
//! ([`string_run`]); only their non-ASCII runs go through `str::from_utf8`, carrying a sequence
//! cut by a piece boundary over to the next piece (JSON allows non-ASCII bytes only in strings,
//! and the structural states refuse them elsewhere). What it must never do: allocate per byte, or accept
//! a text `serde_json` would refuse (the tests check the two agree).

use bytes::Bytes;

/// Deepest nesting accepted, as serde_json's default recursion limit (128).
pub const MAX_DEPTH: usize = 128;

/// Whether `body` (the pieces in order) is exactly one valid JSON text (RFC 8259 §2), with
/// optional whitespace around it, in valid UTF-8 (§8.1).
pub fn is_json(body: &[Bytes]) -> bool {
    let mut v = Validator::new();
    body.iter().all(|p| v.feed(p)) && v.done()
}

/// The index of the first byte of `s` that ends a run of plain JSON string bytes: `"`, `\`, a
/// control byte (below 0x20), or, when `stop_non_ascii`, a byte of 0x80 or above; `s.len()` if
/// none does. This scan is where a validator or an escaper spends its time on string-heavy
/// bodies, so it tests 64 bytes per step with a branch-free body the compiler turns into SIMD
/// compares (SSE2 on every x86-64), then finds the exact byte in the block that has one.
pub fn string_run(s: &[u8], stop_non_ascii: bool) -> usize {
    const BLOCK: usize = 64;
    let max = if stop_non_ascii { 0x7f } else { 0xff };
    let stop = |b: u8| (b == b'"') | (b == b'\\') | (b < 0x20) | (b > max);
    let mut blocks = s.chunks_exact(BLOCK);
    let mut at = 0;
    for block in blocks.by_ref() {
        // A fixed-size block and an OR of bytes: the form LLVM vectorizes (a `bool` fold or an
        // early exit inside the block is compiled byte by byte).
        let block: &[u8; BLOCK] = block.try_into().expect("chunks_exact yields BLOCK bytes");
        let mut hit = 0u8;
        for &b in block {
            hit |=
                u8::from(b == b'"') | u8::from(b == b'\\') | u8::from(b < 0x20) | u8::from(b > max);
        }
        if hit != 0 {
            break;
        }
        at += BLOCK;
    }
    at + s[at..]
        .iter()
        .position(|&b| stop(b))
        .unwrap_or(s.len() - at)
}

/// UTF-8 across piece boundaries: `carry` holds the start of a sequence a piece cut. Fed only
/// the runs of a string that hold non-ASCII bytes (JSON allows them nowhere else), in order; a
/// cut sequence can only end a piece, so the next run fed starts the next piece.
#[derive(Default)]
struct Utf8 {
    carry: [u8; 4],
    len: usize,
}

impl Utf8 {
    fn feed(&mut self, mut piece: &[u8]) -> bool {
        if self.len > 0 {
            // Complete the cut sequence from the front of this piece (at most 3 more bytes).
            let need = utf8_len(self.carry[0]);
            while self.len < need && !piece.is_empty() {
                self.carry[self.len] = piece[0];
                self.len += 1;
                piece = &piece[1..];
            }
            if self.len < need {
                return true;
            }
            if std::str::from_utf8(&self.carry[..self.len]).is_err() {
                return false;
            }
            self.len = 0;
        }
        match std::str::from_utf8(piece) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                // Cut at the end: keep the partial sequence for the next piece.
                let tail = &piece[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.len = tail.len();
                true
            }
            Err(_) => false,
        }
    }

    fn done(&self) -> bool {
        self.len == 0
    }
}

/// The length of a UTF-8 sequence from its first byte (4 for anything invalid: it fails later).
fn utf8_len(b: u8) -> usize {
    match b {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a value (start, after `[`, `,` in an array, `:`).
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a complete value: `,`, a closing bracket, or the end.
    After,
    /// Inside a string (`key` says whether it is an object key).
    Str { key: bool },
    /// After a backslash in a string.
    Escape { key: bool },
    /// `\u` and this many hex digits still to come.
    Unicode { key: bool, left: u8 },
    /// In a literal: the rest of `true`, `false` or `null` still to match.
    Literal { word: &'static [u8], at: u8 },
    /// After `-`.
    Minus,
    /// After a leading `0`.
    Zero,
    /// In the integer digits.
    Int,
    /// After `.`.
    Dot,
    /// In the fraction digits.
    Frac,
    /// After `e`/`E`.
    Exp,
    /// After the exponent's sign.
    ExpSign,
    /// In the exponent digits.
    ExpDigits,
    /// Refused.
    Bad,
}

/// The structural validator. `stack` holds one bit per open container (1 = object).
struct Validator {
    state: State,
    depth: usize,
    stack: [u64; MAX_DEPTH / 64],
    utf8: Utf8,
}

fn ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl Validator {
    fn new() -> Self {
        Self {
            state: State::Value,
            depth: 0,
            stack: [0; MAX_DEPTH / 64],
            utf8: Utf8::default(),
        }
    }

    fn in_object(&self) -> bool {
        let d = self.depth - 1;
        self.stack[d / 64] >> (d % 64) & 1 == 1
    }

    fn open(&mut self, object: bool) -> State {
        if self.depth == MAX_DEPTH {
            return State::Bad;
        }
        let d = self.depth;
        if object {
            self.stack[d / 64] |= 1 << (d % 64);
        } else {
            self.stack[d / 64] &= !(1 << (d % 64));
        }
        self.depth += 1;
        if object {
            State::ObjectFirst
        } else {
            State::ArrayFirst
        }
    }

    fn close(&mut self, object: bool) -> State {
        if self.depth == 0 || self.in_object() != object {
            return State::Bad;
        }
        self.depth -= 1;
        State::After
    }

    fn feed(&mut self, piece: &[u8]) -> bool {
        let mut i = 0;
        if self.utf8.len > 0 {
            // The previous piece cut a sequence in a string: this piece must complete it.
            let run = string_run(piece, false);
            if run == 0 && !piece.is_empty() || !self.utf8.feed(&piece[..run]) {
                return false;
            }
            i = run;
        }
        while i < piece.len() {
            if let State::Str { .. } = self.state {
                // Plain ASCII runs are skipped eight bytes at a time; a run with non-ASCII bytes
                // (up to the next `"`, `\` or control byte) is UTF-8-checked as a whole.
                i += string_run(&piece[i..], true);
                if i < piece.len() && piece[i] >= 0x80 {
                    let run = string_run(&piece[i..], false);
                    if !self.utf8.feed(&piece[i..i + run]) {
                        return false;
                    }
                    i += run;
                }
                if i == piece.len() {
                    break;
                }
            }
            self.state = self.step(piece[i]);
            if self.state == State::Bad {
                return false;
            }
            i += 1;
        }
        true
    }

    /// A number ends at a byte that is not part of it: that byte is then taken as after a value.
    fn end_number(&mut self, b: u8) -> State {
        self.state = State::After;
        self.step(b)
    }

    fn value_start(&mut self, b: u8) -> State {
        use State::*;
        match b {
            _ if ws(b) => self.state,
            b'{' => self.open(true),
            b'[' => self.open(false),
            b'"' => Str { key: false },
            b't' => Literal {
                word: b"true",
                at: 1,
            },
            b'f' => Literal {
                word: b"false",
                at: 1,
            },
            b'n' => Literal {
                word: b"null",
                at: 1,
            },
            b'-' => Minus,
            b'0' => Zero,
            b'1'..=b'9' => Int,
            _ => Bad,
        }
    }

    fn step(&mut self, b: u8) -> State {
        use State::*;
        match self.state {
            Value => self.value_start(b),
            ArrayFirst if b == b']' => self.close(false),
            ArrayFirst => {
                if ws(b) {
                    ArrayFirst
                } else {
                    self.value_start(b)
                }
            }
            ObjectFirst | Key => match b {
                _ if ws(b) => self.state,
                b'"' => Str { key: true },
                b'}' if self.state == ObjectFirst => self.close(true),
                _ => Bad,
            },
            Colon => match b {
                _ if ws(b) => Colon,
                b':' => Value,
                _ => Bad,
            },
            After => match b {
                _ if ws(b) => After,
                b',' if self.depth > 0 => {
                    if self.in_object() {
                        Key
                    } else {
                        Value
                    }
                }
                b']' => self.close(false),
                b'}' => self.close(true),
                _ => Bad,
            },
            Str { key } => match b {
                b'"' if key => Colon,
                b'"' => After,
                b'\\' => Escape { key },
                0..=0x1f => Bad,
                _ => Str { key },
            },
            Escape { key } => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Str { key },
                b'u' => Unicode { key, left: 4 },
                _ => Bad,
            },
            Unicode { key, left } if b.is_ascii_hexdigit() => match left {
                1 => Str { key },
                _ => Unicode {
                    key,
                    left: left - 1,
                },
            },
            Unicode { .. } => Bad,
            Literal { word, at } => {
                if word[at as usize] != b {
                    Bad
                } else if at as usize + 1 == word.len() {
                    After
                } else {
                    Literal { word, at: at + 1 }
                }
            }
            Minus => match b {
                b'0' => Zero,
                b'1'..=b'9' => Int,
                _ => Bad,
            },
            Zero => match b {
                b'.' => Dot,
                b'e' | b'E' => Exp,
                _ => self.end_number(b),
            },
            Int => match b {
                b'0'..=b'9' => Int,
                b'.' => Dot,
                b'e' | b'E' => Exp,
                _ => self.end_number(b),
            },
            Dot => match b {
                b'0'..=b'9' => Frac,
                _ => Bad,
            },
            Frac => match b {
                b'0'..=b'9' => Frac,
                b'e' | b'E' => Exp,
                _ => self.end_number(b),
            },
            Exp => match b {
                b'+' | b'-' => ExpSign,
                b'0'..=b'9' => ExpDigits,
                _ => Bad,
            },
            ExpSign => match b {
                b'0'..=b'9' => ExpDigits,
                _ => Bad,
            },
            ExpDigits => match b {
                b'0'..=b'9' => ExpDigits,
                _ => self.end_number(b),
            },
            Bad => Bad,
        }
    }

    /// The text ended: complete only after a whole top-level value (a number may end here).
    fn done(&self) -> bool {
        self.depth == 0
            && self.utf8.done()
            && matches!(
                self.state,
                State::After | State::Zero | State::Int | State::Frac | State::ExpDigits
            )
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
