//! The clock abstraction. Implementations live outside `core` (a system clock in the server and
//! agent, a fake clock in test-support) so decision code only ever sees an injected `now`.
use crate::model::UnixTime;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixTime;
}
