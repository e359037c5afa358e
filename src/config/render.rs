//! Printing the resolved configuration (`ringway check`): every default written out, as TOML
//! that parses back to an equal [`Config`].

use super::Config;

const HEADER: &str = "# ringway resolved configuration: every default filled in.\n\n";

pub(super) fn render(config: &Config) -> String {
    match toml::to_string(config) {
        Ok(body) => format!("{HEADER}{body}"),
        // Every field serialises to a TOML string, integer, bool, array or table; a failure here
        // is a bug in this module, reported in the output rather than by a panic.
        Err(e) => format!("# ringway: could not render the configuration: {e}\n"),
    }
}
