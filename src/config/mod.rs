//! Configuration: the TOML schema, every default, validation with file:line:column errors.
