//! Placeholder, filled in with the suite.
