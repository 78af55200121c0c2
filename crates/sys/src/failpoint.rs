//! Failpoints: named places in crash-sensitive code where a test can make the process crash
//! (`abort`) or panic, to prove that a restart repairs what a crash at that exact point leaves.
//!
//! Compiled in only with the `failpoints` feature, which only test builds enable (crates list
//! `plugind-sys` with it under `[dev-dependencies]`); without it [`hit`] is an empty inline
//! function. A failpoint fires when the `PLUGIND_FAILPOINTS` environment variable (read on
//! every hit, so a test child process can be armed from outside) or `set` (feature builds
//! only) names it:
//! `name=abort` ends the process at once with `SIGABRT` (no destructor, no cleanup: a crash),
//! `name=panic` panics (unwinding, so in-process tests can stop an operation dead).

/// What a failpoint does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `std::process::abort()`: the process dies as if killed.
    Abort,
    /// `panic!`: the operation stops where it is; only destructors run.
    Panic,
}

/// The environment variable read by [`hit`]: `name=abort,other=panic`.
pub const ENV: &str = "PLUGIND_FAILPOINTS";

#[cfg(feature = "failpoints")]
mod imp {
    use super::{Action, ENV};
    use std::{collections::HashMap, sync::Mutex};

    static CONFIGURED: Mutex<Option<HashMap<String, Action>>> = Mutex::new(None);

    fn parse(action: &str) -> Option<Action> {
        match action {
            "abort" => Some(Action::Abort),
            "panic" => Some(Action::Panic),
            _ => None,
        }
    }

    pub fn set(name: &str, action: Option<Action>) {
        let mut map = crate::sync::lock(&CONFIGURED);
        let map = map.get_or_insert_with(HashMap::new);
        match action {
            Some(a) => map.insert(name.to_owned(), a),
            None => map.remove(name),
        };
    }

    pub fn hit(name: &str) {
        let from_env = std::env::var(ENV).ok().and_then(|spec| {
            spec.split(',').find_map(|item| {
                let (n, a) = item.split_once('=')?;
                (n.trim() == name).then(|| parse(a.trim())).flatten()
            })
        });
        let configured = crate::sync::lock(&CONFIGURED)
            .as_ref()
            .and_then(|m| m.get(name).copied());
        match from_env.or(configured) {
            Some(Action::Abort) => {
                eprintln!("failpoint {name}: abort");
                std::process::abort();
            }
            Some(Action::Panic) => panic!("failpoint {name}"),
            None => {}
        }
    }
}

/// Arms (`Some`) or disarms (`None`) the failpoint `name` in this process.
#[cfg(feature = "failpoints")]
pub fn set(name: &str, action: Option<Action>) {
    imp::set(name, action)
}

/// Passes the failpoint `name`: crashes or panics here if it is armed.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    imp::hit(name)
}

/// Passes the failpoint `name` (a no-op: built without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::*;

    #[test]
    fn an_armed_failpoint_panics_and_a_disarmed_one_does_nothing() {
        hit("sys-test-point");
        set("sys-test-point", Some(Action::Panic));
        let fired = std::panic::catch_unwind(|| hit("sys-test-point"));
        assert!(fired.is_err());
        set("sys-test-point", None);
        hit("sys-test-point");
    }
}
