//! Kernel and io_uring feature probe (`ringway probe`, and `--io auto`'s decision).
