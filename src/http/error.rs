//! Codec errors: what went wrong, which side caused it, and the status the gateway answers with.
//!
//! Every error is final for the connection it came from: the caller answers (client side) or gives
//! up on the backend (upstream side) and closes, because after a framing error the byte stream can
//! no longer be trusted (RFC 9112 §6.3, §11.2 on request smuggling). This module never builds
//! strings on the error path beyond `Display`.

use std::fmt;

/// Which peer sent the bytes that failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// A downstream client: the gateway answers 4xx/5xx per [`ErrorKind::client_status`].
    Client,
    /// A backend: whatever went wrong, the client gets 502 (Bad Gateway).
    Upstream,
}

/// What was wrong with the bytes. Stable, snake_case [`reason`](ErrorKind::reason) strings for logs,
/// metrics and JSON error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Method is not a token (RFC 9110 §9.1).
    InvalidMethod,
    /// Request-target has bytes outside the URI grammar or is not one of the four forms (RFC 9112 §3.2).
    InvalidTarget,
    /// A `..` segment in the path that would climb above the root (RFC 3986 §5.2.4; refused
    /// rather than clamped, see [`normalize_path`](super::normalize_path)).
    PathAboveRoot,
    /// `%2F`, `%5C` or a raw `\` in the path, refused unless `server.encoded_slashes = "keep"`.
    EncodedSlash,
    /// Authority-form without CONNECT, `*` without OPTIONS, CONNECT without authority-form (RFC 9112 §3.2.3, §3.2.4).
    TargetFormNotAllowed,
    /// The version field is not `HTTP/DIGIT.DIGIT` (RFC 9112 §2.3).
    InvalidVersion,
    /// A well-formed version other than HTTP/1.0 and HTTP/1.1: 505 (RFC 9110 §15.6.6).
    VersionNotSupported,
    /// Response status line is malformed or the code is outside 100..=599 (RFC 9112 §4).
    InvalidStatus,
    /// A field name is empty or not a token (RFC 9110 §5.1).
    InvalidHeaderName,
    /// Whitespace between a field name and the colon: MUST be rejected with 400 (RFC 9112 §5.1).
    WhitespaceBeforeColon,
    /// NUL, bare CR, DEL or another control byte in a field value (RFC 9110 §5.5).
    InvalidHeaderValue,
    /// obs-fold (a line starting with SP/HTAB), or whitespace before the first field line (RFC 9112 §5.2, §2.2).
    ObsoleteLineFolding,
    /// A line ended by LF alone; ringway accepts only CRLF (RFC 9112 §2.2 makes bare LF optional).
    BareLf,
    /// A CR not followed by LF, or an otherwise malformed line ending (RFC 9112 §2.2).
    InvalidNewline,
    /// The request line alone exceeds `max_head_bytes`: 414 (RFC 9112 §3).
    RequestLineTooLong,
    /// The head exceeds `max_head_bytes`: 431 (RFC 6585 §5).
    HeadTooLarge,
    /// More field lines than `max_headers`: 431 (RFC 6585 §5).
    TooManyHeaders,
    /// HTTP/1.1 request without Host (RFC 9112 §3.2).
    MissingHost,
    /// More than one Host field line (RFC 9112 §3.2).
    MultipleHost,
    /// Host (or the absolute-form authority) is not `uri-host [":" port]` (RFC 9110 §7.2).
    InvalidHost,
    /// Both Content-Length and Transfer-Encoding: a smuggling vector (RFC 9112 §6.1, §6.3).
    ContentLengthAndTransferEncoding,
    /// A Content-Length value that is not 1*DIGIT, or overflows u64 (RFC 9110 §8.6).
    InvalidContentLength,
    /// Several Content-Length values that differ (RFC 9112 §6.3 item 5).
    ConflictingContentLength,
    /// Transfer-Encoding whose final coding is not chunked, in a request (RFC 9112 §6.3 item 4).
    TransferEncodingNotChunked,
    /// chunked applied more than once, or not last in a response (RFC 9112 §6.1).
    ChunkedRepeated,
    /// A transfer coding ringway does not know: 501 (RFC 9112 §6.1).
    UnknownTransferCoding,
    /// Transfer-Encoding in an HTTP/1.0 message: framing is faulty (RFC 9112 §6.1).
    TransferEncodingOnHttp10,
    /// Transfer-Encoding with no coding, or an element that is not a token (RFC 9112 §6.1).
    InvalidTransferEncoding,
    /// A response body with a transfer coding other than chunked (gzip, ...) for an HTTP/1.0
    /// client: Transfer-Encoding cannot be sent to it (RFC 9112 §6.1) and ringway does not decode
    /// the coding, so the bytes would lose the field that names it. 502.
    CodingNotDeliverable,
    /// Chunk size line without hex digits, or with a byte that is not allowed (RFC 9112 §7.1).
    InvalidChunkSize,
    /// Chunk size with more than 16 hex digits (it would overflow u64).
    ChunkSizeOverflow,
    /// Control byte, bare CR or bare LF in a chunk extension (RFC 9112 §7.1.1).
    InvalidChunkExtension,
    /// Chunk extensions exceed [`MAX_CHUNK_EXT_BYTES`](super::chunked::MAX_CHUNK_EXT_BYTES).
    ChunkExtensionTooLong,
    /// Chunk data not followed by exactly CRLF (RFC 9112 §7.1).
    InvalidChunkTerminator,
    /// A malformed trailer line, or a forbidden one (Content-Length, Transfer-Encoding, Host) (RFC 9110 §6.5.1).
    InvalidTrailer,
    /// Trailer section exceeds [`MAX_TRAILER_BYTES`](super::chunked::MAX_TRAILER_BYTES).
    TrailersTooLarge,
    /// In raw forwarding mode, a trailer that is not on the allow-list.
    TrailerNotAllowed,
    /// The peer closed before the body was complete (RFC 9112 §8).
    TruncatedBody,
    /// The body exceeds the configured limit: 413 (RFC 9110 §15.5.14).
    BodyTooLarge,
}

impl ErrorKind {
    /// A short, stable, snake_case name, e.g. `"content_length_and_transfer_encoding"`.
    pub const fn reason(self) -> &'static str {
        use ErrorKind::*;
        match self {
            InvalidMethod => "invalid_method",
            InvalidTarget => "invalid_target",
            PathAboveRoot => "path_above_root",
            EncodedSlash => "encoded_slash",
            TargetFormNotAllowed => "target_form_not_allowed",
            InvalidVersion => "invalid_version",
            VersionNotSupported => "version_not_supported",
            InvalidStatus => "invalid_status",
            InvalidHeaderName => "invalid_header_name",
            WhitespaceBeforeColon => "whitespace_before_colon",
            InvalidHeaderValue => "invalid_header_value",
            ObsoleteLineFolding => "obsolete_line_folding",
            BareLf => "bare_lf",
            InvalidNewline => "invalid_newline",
            RequestLineTooLong => "request_line_too_long",
            HeadTooLarge => "head_too_large",
            TooManyHeaders => "too_many_headers",
            MissingHost => "missing_host",
            MultipleHost => "multiple_host",
            InvalidHost => "invalid_host",
            ContentLengthAndTransferEncoding => "content_length_and_transfer_encoding",
            InvalidContentLength => "invalid_content_length",
            ConflictingContentLength => "conflicting_content_length",
            TransferEncodingNotChunked => "transfer_encoding_not_chunked",
            ChunkedRepeated => "chunked_repeated",
            UnknownTransferCoding => "unknown_transfer_coding",
            TransferEncodingOnHttp10 => "transfer_encoding_on_http10",
            InvalidTransferEncoding => "invalid_transfer_encoding",
            CodingNotDeliverable => "coding_not_deliverable",
            InvalidChunkSize => "invalid_chunk_size",
            ChunkSizeOverflow => "chunk_size_overflow",
            InvalidChunkExtension => "invalid_chunk_extension",
            ChunkExtensionTooLong => "chunk_extension_too_long",
            InvalidChunkTerminator => "invalid_chunk_terminator",
            InvalidTrailer => "invalid_trailer",
            TrailersTooLarge => "trailers_too_large",
            TrailerNotAllowed => "trailer_not_allowed",
            TruncatedBody => "truncated_body",
            BodyTooLarge => "body_too_large",
        }
    }

    /// The status the gateway answers a client with when the client's bytes had this error.
    pub const fn client_status(self) -> u16 {
        use ErrorKind::*;
        match self {
            RequestLineTooLong => 414,
            HeadTooLarge | TooManyHeaders => 431,
            UnknownTransferCoding => 501,
            VersionNotSupported => 505,
            BodyTooLarge => 413,
            _ => 400,
        }
    }
}

/// A codec error: the [`ErrorKind`] plus the [`Side`] that sent the offending bytes.
///
/// The decision is carried by the value: [`status`](HttpError::status) is what the client gets
/// (400/413/414/431/501/505 for client errors, 502 for anything a backend sent), and the connection
/// the bytes came from must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    kind: ErrorKind,
    side: Side,
}

impl HttpError {
    /// An error in bytes a client sent.
    pub const fn client(kind: ErrorKind) -> Self {
        Self {
            kind,
            side: Side::Client,
        }
    }

    /// An error in bytes a backend sent.
    pub const fn upstream(kind: ErrorKind) -> Self {
        Self {
            kind,
            side: Side::Upstream,
        }
    }

    pub(crate) const fn new(kind: ErrorKind, side: Side) -> Self {
        Self { kind, side }
    }

    /// What went wrong.
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Who sent the bytes.
    pub const fn side(&self) -> Side {
        self.side
    }

    /// The status to answer the client with: the kind's client status, or 502 for a backend's error.
    pub const fn status(&self) -> u16 {
        match self.side {
            Side::Client => self.kind.client_status(),
            Side::Upstream => 502,
        }
    }

    /// Short, stable, snake_case reason, e.g. `"bare_lf"`.
    pub const fn reason(&self) -> &'static str {
        self.kind.reason()
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.side {
            Side::Client => "client",
            Side::Upstream => "upstream",
        };
        write!(
            f,
            "malformed HTTP from {who}: {} ({})",
            self.kind.reason(),
            self.status()
        )
    }
}

impl std::error::Error for HttpError {}
