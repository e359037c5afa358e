//! Test scaffolding shared by the unit tests and the integration tests: the one macro that runs a
//! test body on both drivers. Compiled into the library (integration tests link it) but hidden
//! from its documentation; nothing on the request path uses it.

use crate::io::Driver;

/// What a test body may take as its driver: the [`Driver`] itself (unit tests on a runtime), or
/// its name (integration tests, which pass `--io <name>` to the binary).
#[doc(hidden)]
pub trait DriverArg {
    /// The argument for `driver`.
    fn for_driver(driver: Driver) -> Self;
}

impl DriverArg for Driver {
    fn for_driver(driver: Driver) -> Self {
        driver
    }
}

impl DriverArg for &'static str {
    fn for_driver(driver: Driver) -> Self {
        driver.as_str()
    }
}

/// Defines a module `$name` holding one `#[test]` per driver (`uring`, `epoll`), each calling
/// `$body` with that driver, as a [`Driver`] or as its name (see [`DriverArg`]):
///
/// ```ignore
/// both_drivers!(keepalive_works, |driver: &str| { /* start the binary with --io driver */ });
/// both_drivers!(zero_copy_assembly, zero_copy_assembly); // fn zero_copy_assembly(d: Driver)
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! both_drivers {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn uring() {
                ($body)(<_ as $crate::testing::DriverArg>::for_driver(
                    $crate::io::Driver::Uring,
                ));
            }
            #[test]
            fn epoll() {
                ($body)(<_ as $crate::testing::DriverArg>::for_driver(
                    $crate::io::Driver::Epoll,
                ));
            }
        }
    };
}
