//! The HTTP/1.1 codec: bytes in, structured values out. No sockets, no clocks, no body copies.
